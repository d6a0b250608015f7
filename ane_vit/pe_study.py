"""What each position embedding costs: parameters, and bytes of the exported program.

A position embedding is cheap in PyTorch and can be expensive after conversion. The
relative-position bias (``PEType.RPE``) learns a small table of ``(2wh-1)(2ww-1)`` rows,
but its gather ``table[index]`` has constant inputs, so Core ML conversion folds it into a
constant of ``heads x N x N`` values (``N = wh*ww`` tokens) that is stored in the model
file. This module builds one ``WindowAttention`` per ``PEType``, converts it with
``ane_vit.export.to_mlprogram`` and reports the parameter count, the bytes of the
program's constants and the size of the saved ``.mlpackage``. These are facts about the
program (bytes, counted with ``ane_vit.analysis``), not latency.

See ``notebooks/04_position_embeddings.ipynb``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import positive_int
from .attention import PEType, WindowAttention
from .partition import parse_window_size
from .plotting import OKABE_ITO

__all__ = [
    "PE_COLORS",
    "PEFootprint",
    "position_parameter_count",
    "rpe_bias_nbytes",
    "fill_like_trained",
    "largest_const",
    "consts_of_shape",
    "mlpackage_nbytes",
    "pe_footprint",
    "pe_footprints",
]

#: One colour per position embedding, fixed across the book (Okabe-Ito).
PE_COLORS: dict[PEType, str] = {
    PEType.RPE: OKABE_ITO["vermillion"],
    PEType.SINGLE_HEAD_RPE: OKABE_ITO["orange"],
    PEType.LePE_ADD: OKABE_ITO["reddish_purple"],
    PEType.LePE_FUSED: OKABE_ITO["blue"],
    PEType.NONE: OKABE_ITO["black"],
}

# Parameters of WindowAttention that belong to the position embedding (by name prefix).
_POSITION_PARAMETERS = ("relative_position_bias_table", "abs_pe", "lepe.")


@dataclass(frozen=True)
class PEFootprint:
    """Size of one converted ``WindowAttention`` layer.

    Attributes:
        pe_type, window_size, dim, num_heads: the layer that was measured.
        parameters: all trainable parameters of the layer.
        position_parameters: those that belong to the position embedding.
        weight_bytes: bytes of the program's constants (weights and folded tables), as
            ``ane_vit.analysis.analyze`` counts them.
        largest_const_shape: shape of the largest constant of the program.
        package_bytes: bytes of the saved ``.mlpackage`` on disk (None if not saved).
    """

    pe_type: PEType
    window_size: tuple[int, int]
    dim: int
    num_heads: int
    parameters: int
    position_parameters: int
    weight_bytes: int
    largest_const_shape: tuple[int, ...]
    package_bytes: int | None

    @property
    def num_tokens(self) -> int:
        """``N = wh*ww``, the tokens each query attends over."""
        return self.window_size[0] * self.window_size[1]


def position_parameter_count(attn: WindowAttention) -> int:
    """Trainable parameters of ``attn`` that belong to its position embedding.

    RPE: ``(2wh-1)(2ww-1) * heads``; SINGLE_HEAD_RPE: ``(2wh-1)(2ww-1)``; LePE_ADD:
    ``N*C`` (absolute table) plus the 3x3 depthwise conv; LePE_FUSED: the conv alone;
    NONE: 0.
    """
    if not isinstance(attn, WindowAttention):
        raise TypeError(f"expected a WindowAttention, got {type(attn).__name__}")
    return sum(p.numel() for name, p in attn.named_parameters() if name.startswith(_POSITION_PARAMETERS))


def rpe_bias_nbytes(window_size: Sequence[int], num_heads: int, bytes_per_value: int = 2) -> int:
    """Bytes of the ``(heads, N, N)`` bias constant that conversion makes from an RPE table.

    ``bytes_per_value`` is 2 for a float16 program (what the ANE computes in), 4 for float32.

    Shapes: bias ``(heads, N_k, 1, N_q)`` with ``N = wh*ww``
    """
    wh, ww = parse_window_size(window_size)
    num_heads = positive_int(num_heads, "num_heads")
    if bytes_per_value not in (2, 4):
        raise ValueError(f"bytes_per_value must be 2 (float16) or 4 (float32), got {bytes_per_value!r}")
    n = wh * ww
    return num_heads * n * n * bytes_per_value


def fill_like_trained(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded small random values, in place; return ``module``.

    Freshly built layers hold zeros (``abs_pe``, biases) that the converter removes as
    no-ops (``x + 0``), which would hide their cost. Trained weights are not zero, so we
    measure on random ones.
    """
    if not std > 0:
        raise ValueError(f"std must be positive, got {std!r}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module


def _const_values(mlmodel) -> list[np.ndarray]:
    prog = getattr(mlmodel, "_mil_program", None)
    if prog is None:
        raise ValueError("this model carries no MIL program; convert it with ane_vit.export.to_mlprogram")
    values = []
    for op in prog.functions["main"].operations:
        if op.op_type != "const":
            continue
        value = np.asarray(op.outputs[0].val)
        if value.dtype.kind in "biuf":  # numbers; leaves out strings such as pad_type
            values.append(value)
    return values


def largest_const(mlmodel) -> tuple[tuple[int, ...], int]:
    """Shape and bytes of the largest constant of a converted ML Program."""
    values = _const_values(mlmodel)
    if not values:
        return (), 0
    big = max(values, key=lambda v: v.nbytes)
    return tuple(big.shape), int(big.nbytes)


def consts_of_shape(mlmodel, shape: Sequence[int]) -> list[np.ndarray]:
    """The numeric constants of a converted ML Program whose shape is ``shape``, in program order.

    Use it to find a folded table, e.g. the per-head RPE bias ``(N_k, 1, N_q)``.
    """
    shape = tuple(int(s) for s in shape)
    return [v for v in _const_values(mlmodel) if v.shape == shape]


def mlpackage_nbytes(mlmodel) -> int:
    """Save ``mlmodel`` as an ``.mlpackage`` in a temporary directory; return its size in bytes."""
    from .export import package_nbytes

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.mlpackage")
        mlmodel.save(path)
        return package_nbytes(path)


def pe_footprint(
    pe_type: PEType | str,
    window_size: Sequence[int],
    dim: int = 64,
    num_heads: int = 2,
    compute_precision: str = "float16",
    save: bool = True,
    seed: int = 0,
) -> PEFootprint:
    """Build one ``WindowAttention``, convert it, and measure its size.

    The layer gets seeded random weights (``fill_like_trained``) and is converted for one
    window, input ``(1, N, C)``. Keep it small: one conversion of ``dim=64``, 2 heads,
    16x16 window took about a second on the book's 2-core Linux CPU.

    Shapes: layer input ``x: (1, N, C)`` with ``N = wh*ww``, ``C = dim``
    """
    from .analysis import analyze
    from .export import to_mlprogram

    attn = fill_like_trained(WindowAttention(dim, window_size, num_heads, pe_type=pe_type), seed=seed).eval()
    n = attn.num_tokens
    mlmodel = to_mlprogram(attn, torch.zeros(1, n, dim), compute_precision=compute_precision)
    shape, _ = largest_const(mlmodel)
    return PEFootprint(
        pe_type=attn.pe_type,
        window_size=attn.window_size,
        dim=dim,
        num_heads=num_heads,
        parameters=sum(p.numel() for p in attn.parameters()),
        position_parameters=position_parameter_count(attn),
        weight_bytes=analyze(mlmodel).weight_bytes,
        largest_const_shape=shape,
        package_bytes=mlpackage_nbytes(mlmodel) if save else None,
    )


def pe_footprints(
    pe_types: Iterable[PEType | str] = tuple(PEType),
    window_sizes: Iterable[Sequence[int]] = ((4, 4), (8, 8), (12, 12), (16, 16)),
    dim: int = 64,
    num_heads: int = 2,
    compute_precision: str = "float16",
    save: bool = True,
) -> list[PEFootprint]:
    """``pe_footprint`` for every (position embedding, window size) pair, in that order."""
    return [
        pe_footprint(pe, ws, dim=dim, num_heads=num_heads, compute_precision=compute_precision, save=save)
        for pe in pe_types
        for ws in window_sizes
    ]
