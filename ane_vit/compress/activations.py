"""W8A8 on Linux: Core ML's activation quantization, calibrated by ``ane_vit.interpret``.

``coremltools.optimize.coreml.linear_quantize_activations`` finds each activation's range by
running the model with Core ML's ``predict``, which only exists on macOS. The rest of it (the
graph passes that insert ``quantize``/``dequantize`` pairs from those ranges) runs anywhere.
``quantize_activations`` therefore records the ranges itself, running the float16 program
with the numpy interpreter on calibration inputs, and hands them to the same passes; with
``weights=True`` the weights are then quantized to int8 per channel: W8A8 (iOS 17 / macOS 14).

The route the coremltools docs give for Linux, ``coremltools.optimize.torch``'s
``LinearQuantizer``, prepares the model with ``torch.fx`` symbolic tracing, which cannot trace
a model that unpacks ``x.shape`` into Python ints (as MOAT does); its ``torch.export`` route
needs ``torch.ao.quantization.quantize_pt2e``, which torch 2.13 no longer has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .methods import _load, _run, _source, _Weights, _weights

__all__ = ["activation_ranges", "quantize_activations"]


def activation_ranges(model, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """``{tensor name: {"rmin": ..., "rmax": ...}}`` over ``samples``, for every input and float op output.

    The program runs in ``ane_vit.interpret`` (float16 ops for a float16 program), op by op;
    ``run_program``'s observer sees each value (the expanded ``constexpr_*`` weights are
    left out: they are weights, not activations).
    """
    from ..interpret import load_program, run_program

    program = load_program(_load(model))
    stats: dict[str, dict[str, float]] = {}

    def observe(_name: str, op_type: str, outputs: Mapping[str, np.ndarray]) -> None:
        if op_type.startswith("constexpr_"):
            return
        for name, value in outputs.items():
            if value.dtype.kind != "f" or value.size == 0:
                continue
            low, high = float(value.min()), float(value.max())
            entry = stats.setdefault(name, {"rmin": low, "rmax": high})
            entry["rmin"], entry["rmax"] = min(entry["rmin"], low), max(entry["rmax"], high)

    count = 0
    for sample in samples:
        count += 1
        run_program(program, sample, observer=observe)
    if count == 0:
        raise ValueError("samples is empty: activation ranges need at least one calibration input")
    for out in program.functions["main"].outputs:  # coremltools keeps no range for the program's outputs
        stats.pop(out.name, None)
    return stats


def quantize_activations(model, samples: Iterable[Mapping[str, np.ndarray]], weights: bool = True):
    """Insert int8 ``quantize``/``dequantize`` pairs calibrated on ``samples`` (and int8 weights): W8A8.

    Args:
        model: a float program (``MLModel`` or ``.mlpackage`` path).
        samples: calibration inputs, ``{input name: array}`` each (e.g. training images).
        weights: also quantize the weights to int8 per channel (W8A8); else A8 only.

    Returns:
        the new ``MLModel`` (specification iOS 17), recording ``w8a8`` in its metadata.
    """
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption as _PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    given, model = model, _load(model)
    found = _weights(model, given) if weights else _Weights(_source(given), (), 0)
    stats = activation_ranges(model, samples)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
    passes = []
    for name in ("compression::insert_prefix_quantize_dequantize_pair", "compression::insert_suffix_quantize_dequantize_pair"):
        graph_pass = PASS_REGISTRY[name]
        graph_pass.set_options([_PassOption("config", config)])
        graph_pass.set_options([_PassOption("activation_stats", stats)])
        passes.append(graph_pass)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])

    def apply(m, _config):
        out = model_utils._apply_graph_pass(m, passes, spec_version=8, pymil_load_func=milproto_load.load,
                                            skip_model_load=True)
        if weights:
            weight_config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
            out = cto.linear_quantize_weights(out, weight_config)
        return out

    return _run(apply, model, None, "w8a8", {"nbits": 8, "weights": "int8 per channel" if weights else "float"},
                {"calibration": "activation ranges (min/max) from ane_vit.interpret"}, weights=found, require_weights=weights)
