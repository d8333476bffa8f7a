"""Shift kernels: Numba paths == NumPy reference == torch (edgert.nn's integer-semantics custom ops)."""

import numpy as np
import pytest
import torch

from edgert.nn.shift import shift_conv2d, shift_linear
from edgert.ops.shift import codes, kernels
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear
from edgert.ops.shift.register import run_shift_conv2d, run_shift_linear
from edgert.ops.reference import EXTRA_RULES
from edgert import ir


def _weights(rng, shape, bits, zero, scale_exp):
    n_exp = codes.n_exponents(bits, zero)
    m = rng.choice([-1, 1], shape) * 2 ** rng.integers(0, n_exp, shape)
    if zero:
        m = np.where(rng.random(shape) < 0.2, 0, m)
    return m, (m * 2.0 ** scale_exp).astype(np.float32)


CONV_CASES = [  # (C, O, H, W, k, stride, padding, dilation, groups, bits, zero)
    (3, 5, 9, 7, 3, 1, 1, 1, 1, 3, False),
    (4, 6, 11, 10, 3, 2, 1, 1, 2, 4, True),
    (8, 8, 8, 8, 3, 1, 2, 2, 8, 5, False),  # depthwise, dilated
    (6, 4, 7, 9, (1, 3), (2, 1), (0, 1), 1, 1, 5, True),
    (64, 16, 6, 6, 3, 1, 1, 1, 1, 5, False),  # k = 576 with 5-bit weights: int64 accumulators
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("path", ["shift_add", "int_mac"])
def test_shift_conv2d_exact(case, path):
    c, o, h, w, k, stride, padding, dilation, groups, bits, zero = case
    rng = np.random.default_rng(hash(case) % 2 ** 32)
    kh, kw = (k, k) if isinstance(k, int) else k
    m, wf = _weights(rng, (o, c // groups, kh, kw), bits, zero, -4)
    x = (rng.standard_normal((2, c, h, w)) * 3).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    frac = 4
    st = stride if isinstance(stride, tuple) else (stride, stride)
    pd = padding if isinstance(padding, tuple) else (padding, padding)
    want = shift_conv2d(torch.from_numpy(x), torch.from_numpy(wf), torch.from_numpy(bias), list(st), list(pd),
                        [dilation] * 2, groups, bits, zero, -4, 8, frac).numpy()
    node = ShiftConv2d(name="s", inputs=("x", "c", "b"), output="y", weight_shape=m.shape, stride=st,
                       padding=pd, dilation=dilation, groups=groups, bits=bits, zero=zero, scale_exp=-4,
                       act_bits=8, frac_bits=frac, path=path)
    packed = codes.pack(codes.encode(wf, bits, zero, -4), bits)
    spec = node.infer([ir.TensorSpec(x.shape), ir.TensorSpec(packed.shape, "uint8"), ir.TensorSpec(bias.shape)])
    ref = EXTRA_RULES["shift_conv2d"](node, [x, packed, bias], spec, {})
    np.testing.assert_array_equal(ref, want)  # NumPy reference vs torch, bit for bit
    np.testing.assert_array_equal(run_shift_conv2d(node, [x, packed, bias], {}), ref)  # kernel vs reference


@pytest.mark.parametrize("bits, zero", [(3, False), (4, True), (5, False), (5, True)])
@pytest.mark.parametrize("path", ["shift_add", "int_mac"])
def test_shift_linear_exact(bits, zero, path):
    rng = np.random.default_rng(bits)
    m, wf = _weights(rng, (7, 301), bits, zero, -6)
    x = (rng.standard_normal((5, 301)) * 2).astype(np.float32)
    want = shift_linear(torch.from_numpy(x), torch.from_numpy(wf), None, bits, zero, -6, 6, 3).numpy()
    node = ShiftLinear(name="s", inputs=("x", "c"), output="y", weight_shape=(7, 301), bits=bits, zero=zero,
                       scale_exp=-6, act_bits=6, frac_bits=3, path=path)
    packed = codes.pack(codes.encode(wf, bits, zero, -6), bits)
    spec = node.infer([ir.TensorSpec(x.shape), ir.TensorSpec(packed.shape, "uint8")])
    ref = EXTRA_RULES["shift_linear"](node, [x, packed], spec, {})
    np.testing.assert_array_equal(ref, want)
    np.testing.assert_array_equal(run_shift_linear(node, [x, packed], {}), ref)


def test_naive_loop_agrees():
    rng = np.random.default_rng(1)
    m, _ = _weights(rng, (4, 3, 3, 3), 3, False, 0)
    xq = rng.integers(-128, 128, (1, 3, 8, 8)).astype(np.int32)
    exps, negs = kernels.split_multipliers(m)
    acc = kernels.shift_conv2d_naive(xq, exps, negs, (1, 1), (1, 1), 1, np.zeros((1, 4, 6, 6), np.int32))
    np.testing.assert_array_equal(acc, kernels.shift_conv2d_ref(xq, m, (1, 1), (0, 0, 0, 0), (1, 1), 1, (6, 6)))


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, 200.0, -200.0], np.float32)
    assert kernels.quantize(x, 8, 0).tolist() == [0, 2, 2, 0, 127, -128]
