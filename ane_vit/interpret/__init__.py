"""Run a converted Core ML ML Program with numpy: program-level parity without a Mac.

Core ML *prediction* needs macOS, but the program that ``coremltools`` converts (the MIL
program: a list of ops such as ``conv``, ``einsum``, ``softmax``, each with named inputs and
typed outputs) can be read on any OS. ``run_program`` executes that list, op by op, on
numpy arrays, so a test on Linux can feed the converted program an input and compare its
output with the PyTorch model it came from (``program_parity``).

Precision: each op is computed in the dtype of its output variable. A float16 program (the
default of ``ane_vit.export.to_mlprogram``) therefore rounds *every op's result* to float16,
as a float16 device does. Inside one op the arithmetic is float32: elementwise ops
(``add``, ``mul``, ``real_div``, ``sqrt``...) are then exactly IEEE float16 arithmetic (one
correctly rounded result); reductions and contractions (``conv``, ``matmul``, ``einsum``,
``linear``, ``reduce_*``, ``softmax``, ``layer_norm``...) accumulate in float32 and round
once to float16. Reductions whose intermediates can overflow on the way to a representable
result (log-sum-exp, the L2 norm, the mean, layer and instance norm) subtract the maximum or
scale by the largest magnitude, as numerically careful kernels do. That approximates
hardware that accumulates in a wider format and rounds at the op's output; what the Neural
Engine does inside an op is not documented.

What this does NOT prove: it is not the Neural Engine (nor Core ML's CPU or GPU backends).
Devices accumulate in their own order and precision, fuse ops, may run some ops in float32
or on another compute unit, and Core ML may rewrite the program again when it compiles it;
nothing here measures speed or says where an op would run. Parity here shows that
*conversion kept the math*: the converted program, evaluated faithfully in float16, computes
what the PyTorch model computes. The book's export-and-inspection chapter (chapter 6) uses it.

Shapes: every op's result is checked against the static shape that ``coremltools``
inferred for its output variable; a mismatch raises ``RuntimeError`` naming the op.

Reading programs: ``load_program`` / ``read_program`` (``ane_vit.interpret.load``) are the one
loader of saved programs, shared with ``ane_vit.analysis`` and ``ane_vit.compress``; each way a
path can fail to be a program has its own ``ProgramLoadError`` subclass and a message that
names the file and says what to do. Watching a run: ``run_program(..., observer=fn)`` calls
``fn(name, op_type, outputs)`` with every input and op output (``compress.activation_ranges``
calibrates W8A8 this way).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..testing import ParityReport, assert_parity
from .load import (
    CorruptWeightsError,
    MissingWeightsError,
    NotAProgramError,
    ProgramLoadError,
    ProgramNotFoundError,
    TruncatedWeightsError,
    UnsupportedSpecError,
    load_mlmodel,
    load_program,
    read_program,
)
from .op_table import _OPS, _SETTINGS
from .ops import _Args, _out_shape

__all__ = [
    "SUPPORTED_OPS",
    "UnsupportedOpError",
    "ProgramLoadError",
    "ProgramNotFoundError",
    "NotAProgramError",
    "UnsupportedSpecError",
    "MissingWeightsError",
    "TruncatedWeightsError",
    "CorruptWeightsError",
    "load_program",
    "read_program",
    "load_mlmodel",
    "unsupported_ops",
    "run_program",
    "program_parity",
    "Observer",
]


class UnsupportedOpError(ValueError):
    """The program uses op types (or op settings) that ``run_program`` does not implement.

    ``op_types`` lists every one found (sorted), so one error names them all.
    """

    def __init__(self, op_types: Sequence[str]):
        self.op_types = tuple(sorted(set(op_types)))
        super().__init__(
            f"the ML Program uses {len(self.op_types)} op type(s) or op setting(s) that ane_vit.interpret "
            f"does not support: {', '.join(self.op_types)} (see ane_vit.interpret.SUPPORTED_OPS)"
        )


SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"const"}
"""MIL op types that ``run_program`` executes (``const`` included)."""


def _main(model):
    prog = load_program(model)
    if "main" not in prog.functions:
        raise ValueError(f"the program has no 'main' function; it has {sorted(prog.functions)}")
    return prog.functions["main"]


def _setting(value):
    return value.item() if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0) else value


def _unsupported(func) -> list[str]:
    """Unsupported op types, and supported ones with a setting (a const input) that
    ``run_program`` does not implement, shown as ``op_type(name=value)``."""
    found = set()
    for op in func.operations:
        if op.op_type not in SUPPORTED_OPS:
            found.add(op.op_type)
        for name, ok in _SETTINGS.get(op.op_type, {}).items():
            var = op.inputs.get(name)
            value = None if var is None else _setting(var.val)
            if value is not None and not ok(value):  # None: absent or computed at run time
                found.add(f"{op.op_type}({name}={value!r})")
        if getattr(op, "blocks", None):
            found.add(f"{op.op_type}(nested blocks)")
    return sorted(found)


def unsupported_ops(model) -> list[str]:
    """Op types of ``model``'s main function that ``run_program`` cannot execute (sorted)."""
    return _unsupported(_main(model))


# ---------------------------------------------------------------------------------------
# Running


def _nptype(var):
    from coremltools.converters.mil.mil import types

    return types.nptype_from_builtin(var.dtype)


def _read(var, env: dict):
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        return var.val
    raise RuntimeError(f"variable {var.name!r} is used before it is computed")


#: ``observer(name, op_type, {output name: array})``, called by ``run_program`` for each value it makes.
Observer = Callable[[str, str, Mapping[str, np.ndarray]], None]


def _numeric_input(name: str, value, shape: tuple) -> np.ndarray:
    """``value`` as a numeric numpy array, or a ``TypeError`` naming the input."""
    got = "None" if value is None else f"{type(value).__name__} {value!r}" if isinstance(value, (str, bytes)) else type(value).__name__
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if value is not None and not isinstance(value, (str, bytes)):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):  # ragged nested lists
            array = None
        if array is not None and array.dtype.kind in "biuf":
            return array
        if array is not None and isinstance(value, (np.ndarray, list, tuple)):
            got = f"{got} of dtype {array.dtype}"
    raise TypeError(f"input {name!r} must be a numeric array (a numpy array or a CPU tensor) of shape {shape}, got {got}")


def _warn_non_finite(name: str, given: np.ndarray, cast: np.ndarray) -> None:
    """Warn when an input holds NaN or infinity once cast to the program's dtype (one NaN
    pixel reaches every output a convolution or an attention mixes it into)."""
    if cast.dtype.kind != "f":
        return
    finite = np.isfinite(cast)
    if finite.all():
        return
    nan, inf = int(np.isnan(cast).sum()), int(np.isinf(cast).sum())
    overflowed = int((~finite & np.isfinite(given)).sum()) if given.dtype.kind == "f" else int((~finite).sum())
    why = (f"; {overflowed} of them are finite values beyond {cast.dtype}'s range (largest "
           f"{float(np.finfo(cast.dtype).max):,.0f}), made infinite by the cast to the program's {cast.dtype} input"
           if overflowed else "")
    warnings.warn(f"input {name!r} holds {nan} NaN and {inf} infinite values of {cast.size}{why}: every output they "
                  "reach will be NaN or infinite", RuntimeWarning, stacklevel=3)


def run_program(model, inputs: Mapping[str, np.ndarray], *, observer: Observer | None = None) -> dict[str, np.ndarray]:
    """Execute the ``main`` function of an ML Program on numpy inputs.

    Every op type is checked before anything runs: ``UnsupportedOpError`` names all the
    unsupported ones at once. Inputs are cast to the program's input dtypes (float16 for a
    float16 program); each op's result is cast to its output var's dtype. An input that is
    not numeric (a string, None) raises ``TypeError``; one that holds NaN or infinity after
    that cast (including a float32 value too large for float16) gets a ``RuntimeWarning``.

    Args:
        model: an ``MLModel``, a path to an ``.mlpackage``, or a MIL ``Program``.
        inputs: one array (or CPU tensor) per program input, by name, of the exact shape.
        observer: if given, called as ``observer(name, op_type, outputs)`` with each value the
            run makes, in program order: first each input (``op_type`` ``"input"``, name the
            input's), then each non-``const`` op (``constexpr_*`` ops included) with
            ``{output name: array}`` in the output's dtype. ``compress.activation_ranges``
            records activation ranges this way.

    Returns:
        ``{output name: array}`` in the program's output order and dtypes.

    Shapes: as declared by the program's inputs and outputs.
    """
    func = _main(model)
    bad = _unsupported(func)
    if bad:
        raise UnsupportedOpError(bad)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
    expected = list(func.inputs)
    if sorted(inputs) != sorted(expected):
        raise ValueError(f"inputs must be exactly {expected}, got {sorted(inputs)}")

    if observer is not None and not callable(observer):
        raise TypeError(f"observer must be callable as observer(name, op_type, outputs), got {type(observer).__name__}")
    env: dict = {}
    for name, var in func.inputs.items():
        value = _numeric_input(name, inputs[name], tuple(var.shape))
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"input {name!r} must have shape {tuple(var.shape)}, got {tuple(value.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):  # _warn_non_finite says it, naming the input
            env[var.name] = value.astype(_nptype(var))
        _warn_non_finite(name, value, env[var.name])
    if observer is not None:
        for name, var in func.inputs.items():
            observer(name, "input", {var.name: env[var.name]})

    for op in func.operations:
        if op.op_type == "const":
            env[op.outputs[0].name] = op.outputs[0].val
            continue
        values = {}
        for key, var in op.inputs.items():
            values[key] = [_read(v, env) for v in var] if isinstance(var, (list, tuple)) else _read(var, env)
        try:
            result = _OPS[op.op_type](_Args(op, values))
        except Exception as err:
            raise RuntimeError(f"op {op.name!r} ({op.op_type}) failed: {err}") from err
        results = result if isinstance(result, list) else [result]
        if len(results) != len(op.outputs):
            raise RuntimeError(f"op {op.name!r} ({op.op_type}) gave {len(results)} outputs, expected {len(op.outputs)}")
        for i, (out, value) in enumerate(zip(op.outputs, results)):
            value = np.asarray(value).astype(_nptype(out), copy=False)
            shape = _out_shape(op, i)
            if shape is not None and value.shape != shape:
                raise RuntimeError(f"op {op.name!r} ({op.op_type}) produced shape {value.shape}, the program declares {shape}")
            env[out.name] = value
        if observer is not None:
            observer(op.name, op.op_type, {out.name: env[out.name] for out in op.outputs})
    return {out.name: env[out.name] for out in func.outputs}


def program_parity(
    module: torch.nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    model=None,
    min_psnr: float | None = None,
    per_output: bool = False,
) -> ParityReport | dict[str, ParityReport]:
    """Compare a module's PyTorch float32 output with its converted program run here.

    Converts ``module`` with ``ane_vit.export.to_mlprogram`` (float16) unless ``model`` is
    given, runs the program with ``run_program`` and compares each output with
    ``ane_vit.testing.assert_parity``.

    Args:
        module: the PyTorch module (run in eval mode, float32, no grad).
        example: the input tensor, or tensors in the program's input order.
        model: an already converted ``MLModel`` / ``.mlpackage`` path / MIL ``Program``.
        min_psnr: if given, raise ``AssertionError`` naming the output that falls short.
        per_output: return ``{output name: ParityReport}`` instead of the worst figures.

    Returns:
        the worst ``ParityReport`` (largest max abs error, lowest PSNR) over the outputs,
        or one per output with ``per_output=True``.

    Shapes: ``example`` as the module takes it; outputs must match the module's.
    """
    examples = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if model is None:
        from ..export import to_mlprogram

        model = to_mlprogram(module, examples)
    prog = load_program(model)
    names = list(_main(prog).inputs)
    if len(names) != len(examples):
        raise ValueError(f"the program takes {len(names)} inputs {names}, got {len(examples)} example tensors")
    outputs = run_program(prog, dict(zip(names, examples)))
    with torch.no_grad():
        reference = module.eval()(*examples)
    reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    if len(reference) != len(outputs):
        raise ValueError(f"the module returns {len(reference)} outputs, the program {len(outputs)}")
    reports = {
        name: assert_parity(ref, out, min_psnr=min_psnr, name=name)
        for (name, out), ref in zip(outputs.items(), reference)
    }
    if per_output:
        return reports
    return ParityReport(max(r.max_abs for r in reports.values()), min(r.psnr_db for r in reports.values()))
