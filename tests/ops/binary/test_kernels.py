"""Binary kernels: Numba vs NumPy reference vs torch (edgert.nn's custom ops), integer-exact."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal

from edgert.nn import binary_conv2d as torch_binary_conv2d
from edgert.nn import binary_linear as torch_binary_linear
from edgert.ops.binary import bits, conv
from edgert.ops.binary.nodes import words

CONV_CASES = [  # C, O, H, W, k, stride, padding (t, l, b, r), pad_mode, groups
    (3, 4, 5, 6, 1, 1, (0, 0, 0, 0), "one", 1),
    (70, 5, 7, 8, 3, 1, (1, 1, 1, 1), "one", 1),
    (70, 6, 7, 8, 3, 2, (1, 1, 1, 1), "zero", 1),
    (130, 66, 6, 7, 3, 1, (1, 0, 2, 1), "zero", 2),
    (128, 8, 9, 10, 3, 2, (1, 1, 1, 1), "one", 4),
    (12, 12, 5, 5, 3, 1, (1, 1, 1, 1), "zero", 12),  # depthwise
    (70, 140, 7, 6, 3, 2, (1, 1, 1, 1), "one", 70),  # depthwise, 2 output channels per group
    (256, 256, 5, 5, 3, 1, (1, 1, 1, 1), "zero", 256),  # depthwise, 4 words of output bits
    (70, 70, 4, 9, 3, 1, (1, 1, 1, 1), "zero", 70),  # depthwise: a whole input word, then 6 channels
    (130, 4, 5, 5, 3, 1, (1, 1, 1, 1), "one", 2),  # groups of 65 channels: 2 words each (per-group kernel)
    (16, 2, 6, 6, 5, 1, (2, 2, 2, 2), "zero", 2),  # 8 channels a group, 200 terms: byte counts, not fused
    (16, 4, 8, 8, 7, 1, (3, 3, 3, 3), "one", 2),  # 392 terms: int16 counts
    (16, 24, 5, 19, 3, 1, (1, 1, 1, 1), "one", 8),  # 3 channels a group out, 2 in; rows past a vector
    (40, 16, 4, 20, 3, 1, (1, 1, 1, 1), "zero", 1),  # the float epilogue's tile over whole vectors and a tail
    (65, 3, 6, 6, 5, 2, (2, 2, 2, 2), "zero", 1),
]


def _case(rng, c, o, h, w, k, groups):
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    x[0, 0, 0, :2] = 0.0  # sign(0) = +1
    wt = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    return x, wt, rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)


@pytest.mark.parametrize("c,o,h,w,k,stride,padding,pad_mode,groups", CONV_CASES)
def test_binary_conv_matches_torch_and_reference(c, o, h, w, k, stride, padding, pad_mode, groups):
    rng = np.random.default_rng(c * 100 + o)
    x, wt, scale, bias = _case(rng, c, o, h, w, k, groups)
    want = torch_binary_conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(scale),
                               torch.from_numpy(bias), [stride, stride], list(padding),
                               1.0 if pad_mode == "one" else 0.0, groups).numpy()
    xb, wb = bits.bitpack(x, groups), bits.pack_conv_weight(wt)
    dot = conv.binary_conv_dot_ref(xb, wb, c, (stride, stride), padding, pad_mode, groups)
    assert_array_equal(conv.epilogue_ref(dot, "float", scale, bias), want)  # reference vs torch
    got = conv.binary_conv2d(xb, wb, c, (stride, stride), padding, pad_mode, groups, "float", scale, bias)
    assert_array_equal(got, want)  # kernel vs torch
    thr = rng.integers(-k * k * c // groups, k * k * c // groups, o).astype(np.int32)
    flip = rng.integers(0, 2, o).astype(np.uint8)
    for out_groups in sorted({1, o} | {d for d in (2, 3) if o % d == 0}):  # o: a depthwise conv's input next
        assert_array_equal(conv.binary_conv2d(xb, wb, c, (stride, stride), padding, pad_mode, groups, "bits",
                                              thr, flip, out_groups),
                           conv.epilogue_ref(dot, "bits", thr, flip, out_groups))


@pytest.mark.parametrize("k,o", [(1, 1), (63, 5), (64, 64), (1001, 70)])
def test_binary_dense_matches_torch(k, o):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((3, k)).astype(np.float32)
    w = rng.standard_normal((o, k)).astype(np.float32)
    s, b = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    want = torch_binary_linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(s),
                               torch.from_numpy(b)).numpy()
    xb, wb = bits.bitpack(x), bits.pack_dense_weight(w)
    dot = conv.binary_dense_dot_ref(xb, wb, k)
    assert_array_equal(dot, np.where(x >= 0, 1, -1) @ np.where(w >= 0, 1, -1).T)  # ref vs definition
    assert_array_equal(conv.binary_dense(xb, wb, k, "float", s, b), want)
    thr = rng.integers(-k, k + 1, o).astype(np.int32)
    flip = rng.integers(0, 2, o).astype(np.uint8)
    assert_array_equal(conv.binary_dense(xb, wb, k, "bits", thr, flip), conv.epilogue_ref(dot, "bits", thr, flip))


@pytest.mark.parametrize("shape,groups", [((2, 70, 3, 4), 1), ((2, 130, 3, 4), 2), ((3, 65), 1), ((1, 6, 2, 2), 3)])
def test_bitpack_matches_reference_and_definition(shape, groups):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:3] = [0.0, -0.0, np.nan]
    packed = bits.bitpack_ref(x, groups)
    assert_array_equal(bits.bitpack(x, groups), packed)
    neg = ~(x >= 0)
    assert_array_equal(bits.unpack_last_ref(packed, shape[1], groups), neg.transpose(0, 2, 3, 1) if x.ndim == 4 else neg)
    assert_array_equal(bits.sign(x), torch.where(torch.from_numpy(x) >= 0, 1.0, -1.0).numpy())


def test_bitpack_hand_case():
    x = np.array([[-1.0, 2.0, -3.0] + [1.0] * 62], np.float32)  # bits 0 and 2 set; 65 -> 2 words
    assert_array_equal(bits.bitpack(x), np.array([[5, 0]], np.uint64))


def test_groups_of_one_channel_pack_densely():
    """70 groups of one channel (a depthwise conv's input) pack as one group: 2 words, not 70."""
    x = np.array([[-1.0, 2.0, -3.0] + [1.0] * 66 + [-1.0]], np.float32)  # bits 0, 2 and 69
    assert_array_equal(bits.bitpack(x, 70), np.array([[5, 1 << 5]], np.uint64))
    assert_array_equal(bits.bitpack_ref(x, 70), bits.bitpack(x, 70))
    assert words(70, 70) == 2 and words(70, 35) == 35 and words(70, 1) == 2


@pytest.mark.parametrize("kernel,stride,padding", [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)),
                                                    ((3, 2), (1, 2), (1, 0, 0, 1))])
def test_binary_max_pool_is_max_of_signs(kernel, stride, padding):
    x = np.random.default_rng(2).standard_normal((2, 70, 7, 6)).astype(np.float32)
    xb = bits.bitpack(x)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, padding[:2]).numpy() \
        if padding[0] == padding[2] and padding[1] == padding[3] else None
    got = conv.binary_max_pool(xb, kernel, stride, padding)
    assert_array_equal(got, conv.binary_max_pool_ref(xb, kernel, stride, padding))
    if want is not None:
        assert_array_equal(got, bits.bitpack(want))
