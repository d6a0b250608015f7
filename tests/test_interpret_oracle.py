"""Interpreter ops against hand-written formulas, on inputs that break naive implementations.

``tests/test_interpret.py`` compares converted programs with PyTorch on ordinary inputs. A
softmax computed as ``exp(x) / sum(exp(x))`` agrees there and fails only for large logits
(``exp`` overflows float32 above about 88.7): the programs here feed such inputs and compare
with the stable formula written in float64, ``exp(x - max) / sum(exp(x - max))``.
"""

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from ane_vit.interpret import run_program  # noqa: E402
from ane_vit.testing import assert_parity  # noqa: E402


def toy_softmax(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _program(fn, shape):
    from coremltools.converters.mil import Builder as mb

    return mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)(fn)


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_of_large_logits(axis):
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    x[0] += 1000.0  # exp(1000) overflows float32 (and float64)
    x[1] -= 1000.0  # exp(-1000) underflows to 0
    x[2, 1] += 100.0
    (out,) = run_program(_program(lambda x: mb.softmax(x=x, axis=axis), x.shape), {"x": x}).values()
    expected = toy_softmax(x, axis)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert_parity(expected, out, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, atol=1e-6)


def test_softmax_of_large_float16_logits():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    x = np.array([[100.0, 99.0, 98.0], [60000.0, 59990.0, -60000.0]], np.float16)

    def prog(x):
        return mb.softmax(x=x, axis=-1)

    program = mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=types.fp16)], opset_version=ct.target.iOS16)(prog)
    (out,) = run_program(program, {"x": x}).values()
    assert out.dtype == np.float16
    assert_parity(toy_softmax(x, -1), out.astype(np.float32), atol=1e-3)
