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


def test_inputs_are_rounded_to_the_programs_float16_inputs_first():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    def prog(x):
        return mb.sub(x=x, y=np.float16(1.0))

    program = mb.program(input_specs=[mb.TensorSpec(shape=(3,), dtype=types.fp16)], opset_version=ct.target.iOS16)(prog)
    x = np.array([1.0 + 2.0**-12, 1.0 + 2.0**-9, 3.0], np.float32)  # float16 spacing near 1 is 2**-10
    (out,) = run_program(program, {"x": x}).values()
    assert out.dtype == np.float16
    # 1 + 2**-12 is 1.0 in float16; 2**-12 itself would be representable in the output
    np.testing.assert_array_equal(out, np.array([0.0, 2.0**-9, 2.0], np.float16))


def test_normalisations_use_the_programs_epsilon():
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(1)
    x = (0.5 + 1e-2 * rng.standard_normal((2, 3, 4, 5))).astype(np.float32)  # variances ~1e-4
    mean, var = np.float32([0.4, 0.5, 0.6]), np.float32([2e-4, 5e-4, 1e-3])
    gamma, beta = np.float32([1.5, -0.5, 2.0]), np.float32([0.1, 0.2, -0.3])
    eps = 1e-3  # a default eps of 1e-5 would change every output by more than 10 %

    def prog(x):
        return (
            mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=eps),
            mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=eps),
            mb.layer_norm(x=x, axes=[1], epsilon=eps),
        )

    outs = list(run_program(_program(prog, x.shape), {"x": x}).values())
    x64, c = x.astype(np.float64), (1, 3, 1, 1)
    m_hw = x64.mean(axis=(2, 3), keepdims=True)
    m_c = x64.mean(axis=1, keepdims=True)
    expected = [
        (x64 - mean.reshape(c)) / np.sqrt(var.reshape(c) + eps) * gamma.reshape(c) + beta.reshape(c),
        (x64 - m_hw) / np.sqrt(((x64 - m_hw) ** 2).mean(axis=(2, 3), keepdims=True) + eps) * gamma.reshape(c) + beta.reshape(c),
        (x64 - m_c) / np.sqrt(((x64 - m_c) ** 2).mean(axis=1, keepdims=True) + eps),
    ]
    for i, (e, o) in enumerate(zip(expected, outs)):
        assert_parity(e, o, atol=1e-5 * float(np.abs(e).max()), name=f"output {i}")


def test_max_pool_padding_never_wins():
    from coremltools.converters.mil import Builder as mb

    x = -1.0 - np.arange(2 * 5 * 6, dtype=np.float32).reshape(1, 2, 5, 6)  # all negative: a zero pad would win
    program = _program(lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same"), x.shape)
    (out,) = run_program(program, {"x": x}).values()
    # 'same' on 5x6 with k=3, s=2: 3x3 outputs, rows padded (1, 1), columns (0, 1); by hand:
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (1, 1), (0, 1)], constant_values=-np.inf)
    expected = np.array([[[[padded[0, c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max() for j in range(3)] for i in range(3)]
                          for c in range(2)]])
    assert np.isfinite(expected).all()
    assert_parity(expected, out, atol=0.0)


def test_an_op_result_of_the_wrong_shape_is_named(monkeypatch):
    from coremltools.converters.mil import Builder as mb

    from ane_vit.interpret import op_table

    program = _program(lambda x: mb.relu(x=x, name="the_relu"), (2, 3))
    monkeypatch.setitem(op_table._OPS, "relu", lambda a: np.zeros((3, 2), np.float32))  # a broken op
    with pytest.raises(RuntimeError, match=r"op 'the_relu' \(relu\) produced shape \(3, 2\), the program declares \(2, 3\)"):
        run_program(program, {"x": np.ones((2, 3), np.float32)})
