"""Run a Core AI program with Apple's runtime from plain, synchronous Python.

Apple's Python runtime is asynchronous: ``async with asset.executable() as model``, then
``outputs = await model.load_function("main")(inputs)``. ``asyncio.run`` cannot start where
an event loop already runs (inside Jupyter, for one), so ``AIModelRunner`` owns a private
event loop in a thread of its own and hands it each step; the caller just calls. It works
the same from a script, a test or a notebook cell.

On Linux (and on macOS without the OS framework) ``executable()`` first lowers the program
to Apple's portable binary form in a temporary folder and loads that into the runtime that
ships in the ``coreai-core`` wheel, a CPU implementation: a reference for *what* the program
computes, not a measure of speed on any device. Open a runner once and call it many times;
``run_aimodel`` is the one-shot form.

Inputs are checked before the runtime sees them, with errors that name the program, the
input and what was expected: unknown or missing names, a wrong shape, a non-float array.
Floating-point arrays are cast to the input's declared type (a float16 program takes
float16) and made contiguous (Apple's runtime reads raw memory and ignores strides,
``common_issues.md`` of apple/coreai-models).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .paths import check_aimodel
from .quiet import drop_native_stderr_lines
from .stack import require_coreai

__all__ = ["AIModelRunner", "run_aimodel", "random_inputs", "run_sync"]


class _LoopThread:
    """One private asyncio event loop, running in a daemon thread, that runs coroutines for us."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ane_vit-coreai-runtime", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the private loop and wait for its result (exceptions propagate)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def run_sync(coro: Any) -> Any:
    """Run one coroutine to completion from synchronous code, even where an event loop already
    runs in this thread (Jupyter): it runs on a private loop in its own thread."""
    loop = _LoopThread()
    try:
        return loop.run(coro)
    finally:
        loop.close()


def _shape_text(shape: Any) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


class AIModelRunner:
    """A loaded Core AI program, called like a function: ``outputs = runner({"x": array})``.

    Use it as a context manager (``with AIModelRunner(path) as run: ...``) or call
    ``open()`` and ``close()`` (an open runner holds the loaded program and a thread). ``input_shapes``, ``input_dtypes``, ``output_names`` describe
    the function once open.

    Args:
        path: an ``.aimodel`` folder (checked at once: a missing path, an ``.mlpackage`` or a
            folder without a program raise with the reason).
        function: the function to load (default ``main``).
        quiet: drop the Linux runtime's ``ODIE [default]: Loading function ...`` line
            (every other line it writes is kept; see ``ane_vit.coreai.quiet``).
        compute_unit: macOS 27+ only: load the program specialised for ``"cpu"``, ``"gpu"``
            or ``"neural_engine"`` (``ane_vit.coreai.mac.specialization_options``); ``None``
            loads it as the platform does by default. Elsewhere a compute unit raises
            ``RuntimeError`` at ``open()``, saying what it needs.

    Shapes: as the program declares (``input_shapes``).
    """

    def __init__(self, path: str | os.PathLike, function: str = "main", *, quiet: bool = True,
                 compute_unit: str | None = None):
        self.path: Path = check_aimodel(path)
        require_coreai("AIModelRunner")
        if not isinstance(function, str) or not function:
            raise ValueError(f"function must be a non-empty string, got {function!r}")
        self.function, self.quiet, self.compute_unit = function, quiet, compute_unit
        self._loop: _LoopThread | None = None
        self._context: Any = None
        self._fn: Any = None
        self.input_shapes: dict[str, tuple] = {}
        self.input_dtypes: dict[str, np.dtype] = {}
        self.output_names: list[str] = []

    # ------------------------------------------------------------------ lifetime

    def open(self) -> AIModelRunner:
        """Load the program into Apple's runtime (idempotent); returns ``self``."""
        if self._fn is not None:
            return self
        from coreai.authoring import AIModelAsset

        options = None
        if self.compute_unit is not None:
            from .mac import specialization_options

            options = specialization_options(self.compute_unit)  # macOS 27+ only: raises elsewhere
        try:
            asset = AIModelAsset.load(self.path)
        except RuntimeError as err:
            raise ValueError(f"Core AI cannot read the program at {str(self.path)!r}: {err}") from err
        self._loop = _LoopThread()
        try:
            self._context = asset.executable(options)
            model = self._loop.run(self._context.__aenter__())
            names = list(model.function_names)
            if self.function not in names:
                raise ValueError(f"{str(self.path)!r} has no function {self.function!r}; it has {names}")

            async def load() -> Any:
                if not self.quiet:
                    return model.load_function(self.function)
                with drop_native_stderr_lines():
                    return model.load_function(self.function)

            self._fn = self._loop.run(load())
        except BaseException:
            self.close()
            raise
        desc = self._fn.desc
        for name in desc.input_names:
            d = desc.input_descriptor(name)
            self.input_shapes[name] = tuple(d.shape)
            self.input_dtypes[name] = np.dtype(str(d.dtype))
        self.output_names = list(desc.output_names)
        return self

    def close(self) -> None:
        """Release the loaded program and the private event loop (idempotent)."""
        loop, context = self._loop, self._context
        self._fn = self._context = self._loop = None
        if loop is None:
            return
        try:
            if context is not None:
                try:
                    loop.run(context.__aexit__(None, None, None))
                except RuntimeError:
                    pass  # the context never finished entering
        finally:
            loop.close()

    def __enter__(self) -> AIModelRunner:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def _prepare(self, inputs: Any) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.input_shapes) != 1:
                raise TypeError(f"{self.path.name} has inputs {list(self.input_shapes)}: pass a dict name -> array")
            inputs = {next(iter(self.input_shapes)): inputs}
        unknown = sorted(set(inputs) - set(self.input_shapes))
        missing = sorted(set(self.input_shapes) - set(inputs))
        if unknown or missing:
            raise ValueError(f"{self.path.name} ({self.function}) takes the inputs {list(self.input_shapes)}; "
                             f"got {sorted(inputs)}" + (f" (unknown: {unknown})" if unknown else "")
                             + (f" (missing: {missing})" if missing else ""))
        arrays = {}
        for name, value in inputs.items():
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            array = np.asarray(value)
            want, dtype = self.input_shapes[name], self.input_dtypes[name]
            if len(array.shape) != len(want) or any(w is not None and w != s for w, s in zip(want, array.shape)):
                raise ValueError(f"input {name!r} of {self.path.name} ({self.function}) expects shape "
                                 f"{_shape_text(want)} {dtype}, got {tuple(array.shape)} {array.dtype}")
            if array.dtype != dtype:
                if not (np.issubdtype(array.dtype, np.floating) and np.issubdtype(dtype, np.floating)):
                    raise TypeError(f"input {name!r} of {self.path.name} ({self.function}) expects {dtype}, "
                                    f"got {array.dtype}")
                array = array.astype(dtype)  # e.g. float32 data into a float16 program
            arrays[name] = np.ascontiguousarray(array)
        return arrays

    def __call__(self, inputs: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
        """Run the function once; returns ``{output name: numpy array}`` (copies, in the program's dtype).

        ``inputs``: a dict name -> array (numpy or torch), or one array for a one-input program.
        """
        if self._fn is None:
            raise RuntimeError("the runner is not open: use `with AIModelRunner(path) as run:` or call open()")
        arrays = self._prepare(inputs)
        from coreai.runtime import NDArray

        fn = self._fn

        async def call() -> dict[str, np.ndarray]:
            outputs = await fn({k: NDArray(v) for k, v in arrays.items()})
            order = [k for k in self.output_names if k in outputs] + [k for k in outputs if k not in self.output_names]
            return {k: np.array(outputs[k].numpy(), copy=True) for k in order}  # the declared order

        assert self._loop is not None
        return self._loop.run(call())


def run_aimodel(path: str | os.PathLike, inputs: Mapping[str, Any] | Any, function: str = "main") -> dict[str, np.ndarray]:
    """Load a Core AI program, run it once on ``inputs``, release it; returns ``{name: array}``.

    Shapes: the inputs must have the shapes the program declares.
    """
    with AIModelRunner(path, function) as run:
        return run(inputs)


def random_inputs(runner: AIModelRunner, seed: int = 0) -> dict[str, np.ndarray]:
    """One random input per declared input of an open runner (uniform in [0, 1), its shape and dtype).

    Raises ``ValueError`` for an input with a dynamic dimension (no size to draw).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in runner.input_shapes.items():
        if any(s is None for s in shape):
            raise ValueError(f"input {name!r} has a dynamic shape {_shape_text(shape)}; give the inputs yourself")
        out[name] = rng.random(shape, dtype=np.float32).astype(runner.input_dtypes[name])
    return out
