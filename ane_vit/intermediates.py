"""Record every intermediate tensor of a forward pass: shape, rank, and bytes as the ANE stores it.

Attention variants compute the same function but keep very different tensors alive on the
way: the reference builds one ``(B, h, N_q, N_k)`` score tensor for all heads, the
split-softmax version one ``(B, N_k, 1, N_q)`` tensor per head. ``record_intermediates``
runs a module (or any function) once and lists each tensor a torch op produced, with its
dense size and its size once the last axis is padded to 64 bytes (see ``ane_vit.layout``).

Recording happens at run time through ``torch.overrides.TorchFunctionMode``, so it works on
any code PyTorch can execute (``torch.fx`` symbolic tracing cannot follow the shape checks
in ``WindowAttention``). These are facts about the PyTorch graph, not about the converted
Core ML program, where the converter may fuse or drop ops. See
``notebooks/03_attention.ipynb``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from .layout import DTYPE_BYTES, dense_nbytes, padded_nbytes

__all__ = ["TensorRecord", "record_intermediates", "largest_intermediate"]


@dataclass(frozen=True)
class TensorRecord:
    """One tensor produced by a torch op during a forward pass.

    Attributes:
        index: position in execution order (0 = first tensor produced).
        op: the torch function or Tensor method that produced it (``"conv2d"``,
            ``"softmax"``, ``"permute"``, ``"getitem"``, ...).
        shape: the tensor's shape.
        dtype: the dtype it was computed in (``"float32"``, ``"int64"``, ...).
        is_view: True if it shares memory with an input of the op (``permute``,
            ``reshape`` of a contiguous tensor, ``split``): free in PyTorch, but a converted
            program may still materialise it.
        constant: True if it was computed from parameters and buffers alone (for example a
            relative-position bias gathered from its table): a converter folds it into a
            weight, so it is not a run-time intermediate.
        dense_nbytes: bytes stored densely, at the element size the record was made for.
        padded_nbytes: bytes with the last axis padded to 64 bytes, as the ANE stores it.
    """

    index: int
    op: str
    shape: tuple[int, ...]
    dtype: str
    is_view: bool
    constant: bool
    dense_nbytes: int
    padded_nbytes: int

    @property
    def rank(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def padding_overhead(self) -> float:
        """``padded_nbytes / dense_nbytes`` (1.0 = no waste); 1.0 for an empty tensor."""
        return self.padded_nbytes / self.dense_nbytes if self.dense_nbytes else 1.0


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__":  # a property getter such as Tensor.T
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name.strip("_") or name


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _storage_ptr(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:  # tensors without storage (e.g. some wrapper subclasses)
        return None


class _Recorder(TorchFunctionMode):
    """Runs each torch function as usual and remembers the tensors it returns."""

    def __init__(self, element_bytes: int | None, inputs: list[torch.Tensor]):
        super().__init__()
        self.element_bytes = element_bytes
        self.records: list[TensorRecord] = []
        # ids of tensors that depend on the call's inputs; _alive keeps them from being reused
        self._alive: list[torch.Tensor] = list(inputs)
        self._dynamic = {id(t) for t in inputs}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # this mode is off inside: nested calls are not recorded twice
        inputs = list(_tensors((args, kwargs)))
        input_ids = {id(t) for t in inputs}
        input_ptrs = {p for p in map(_storage_ptr, inputs) if p}
        dynamic = any(id(t) in self._dynamic for t in inputs)
        for t in _tensors(out):
            if id(t) in input_ids:  # identity ops (dropout in eval mode, contiguous()) make nothing new
                continue
            if dynamic:
                self._alive.append(t)
                self._dynamic.add(id(t))
            self._record(func, t, input_ptrs, constant=not dynamic)
        return out

    def _record(self, func, t: torch.Tensor, input_ptrs: set[int], constant: bool) -> None:
        shape = tuple(int(s) for s in t.shape)
        # Floating tensors are counted at the element size the ANE would use; others as they are.
        elem = self.element_bytes if (self.element_bytes and t.is_floating_point()) else t.element_size()
        ptr = _storage_ptr(t)
        self.records.append(
            TensorRecord(
                index=len(self.records),
                op=_op_name(func),
                shape=shape,
                dtype=str(t.dtype).removeprefix("torch."),
                is_view=bool(ptr) and ptr in input_ptrs,
                constant=constant,
                dense_nbytes=dense_nbytes(shape, elem),
                padded_nbytes=padded_nbytes(shape, elem),
            )
        )


def record_intermediates(
    fn: Callable,
    *inputs,
    dtype: str | int | None = "fp16",
    include_views: bool = True,
    include_constants: bool = True,
    **kwargs,
) -> list[TensorRecord]:
    """Run ``fn(*inputs, **kwargs)`` once, under ``torch.no_grad()``, and list the tensors it made.

    Every tensor returned by a torch function or Tensor method during the call is recorded
    in execution order, including the final output; the inputs and the parameters
    themselves are not. The module's train/eval mode is left as it is (call ``.eval()``
    first to see the inference graph).

    Args:
        fn: an ``nn.Module`` or any callable built from torch ops.
        inputs: positional arguments for ``fn`` (tensors or anything else it takes).
        dtype: element size used to count the bytes of floating-point tensors:
            ``"fp16"`` (default, what the ANE computes in), ``"fp32"``, a byte count, or
            None to use each tensor's own dtype. Integer and bool tensors always use their own.
        include_views: keep tensors that share memory with an op input (``permute``,
            ``split``, most ``reshape``). Set False to list only freshly computed buffers.
        include_constants: keep tensors computed from parameters and buffers alone
            (``TensorRecord.constant``). Set False to list only what depends on the inputs.
        kwargs: keyword arguments for ``fn``.

    Returns:
        the ``TensorRecord`` list.

    Shapes: any; each record carries its own ``shape``.

    Raises:
        TypeError: if ``fn`` is not callable.
        ValueError: if ``dtype`` is not a known dtype name or a positive byte count.
    """
    if not callable(fn):
        raise TypeError(f"fn must be an nn.Module or a callable, got {type(fn).__name__}")
    if dtype is None:
        element_bytes = None
    elif isinstance(dtype, bool) or not isinstance(dtype, (str, int)):
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, a byte count or None, got {dtype!r}")
    elif isinstance(dtype, int):
        if dtype <= 0:
            raise ValueError(f"dtype as a byte count must be positive, got {dtype}")
        element_bytes = dtype
    elif dtype in DTYPE_BYTES:
        element_bytes = DTYPE_BYTES[dtype]
    else:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, a byte count or None, got {dtype!r}")
    recorder = _Recorder(element_bytes, list(_tensors((inputs, kwargs))))
    with torch.no_grad(), recorder:
        fn(*inputs, **kwargs)
    return [
        r
        for r in recorder.records
        if (include_views or not r.is_view) and (include_constants or not r.constant)
    ]


def largest_intermediate(records: list[TensorRecord], padded: bool = True) -> TensorRecord:
    """The record with the most bytes (padded bytes by default, dense if ``padded=False``).

    Raises:
        ValueError: if ``records`` is empty.
    """
    if not records:
        raise ValueError("records is empty: nothing was recorded")
    key = (lambda r: r.padded_nbytes) if padded else (lambda r: r.dense_nbytes)
    return max(records, key=key)
