"""Bit-sliced conv (sliced.py) vs the NumPy reference: integer-exact packed output."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert.ops.binary import bits, conv, isa, sliced

CASES = [  # C, O, H, W, k, stride, padding (t, l, b, r), pad_mode, out_groups
    (70, 5, 7, 8, 3, 1, (1, 1, 1, 1), "one", 1),
    (70, 6, 7, 9, 3, 2, (1, 1, 1, 1), "zero", 3),
    (130, 66, 6, 7, 3, 1, (1, 0, 2, 1), "zero", 2),
    (65, 3, 6, 6, 5, 2, (2, 2, 2, 2), "zero", 1),
    (3, 4, 5, 6, 1, 1, (0, 0, 0, 0), "one", 1),
    (64, 64, 4, 70, 3, 1, (1, 1, 1, 1), "one", 1),  # wider than one tile of lanes
    (64, 64, 12, 12, 3, 1, (1, 1, 1, 1), "one", 1),  # the bench shapes, reduced
    (128, 128, 6, 6, 3, 1, (1, 1, 1, 1), "one", 1),
    (256, 256, 4, 4, 3, 1, (1, 1, 1, 1), "one", 1),
    (512, 512, 3, 3, 3, 1, (1, 1, 1, 1), "zero", 1),
]


@pytest.mark.parametrize("c,o,h,w,k,stride,padding,pad_mode,out_groups", CASES)
def test_sliced_conv_matches_reference(monkeypatch, c, o, h, w, k, stride, padding, pad_mode, out_groups):
    monkeypatch.setattr(conv, "SLICED_MIN_WIDTH", 1)  # route every width to the bit-sliced kernel
    monkeypatch.setattr(isa, "_forced", "generic")  # which runs where no SIMD variant does
    rng = np.random.default_rng(c + o + w)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    xb, wb = bits.bitpack(x), bits.pack_conv_weight(rng.standard_normal((o, c, k, k)).astype(np.float32))
    dot = conv.binary_conv_dot_ref(xb, wb, c, (stride, stride), padding, pad_mode, 1)
    thr = rng.integers(-k * k * c // 2, k * k * c // 2, o).astype(np.int32)
    thr[:2] = [-k * k * c - 5, k * k * c + 5]  # always off, always on
    flip = rng.integers(0, 2, o).astype(np.uint8)
    want = conv.epilogue_ref(dot, "bits", thr, flip, out_groups)
    assert conv.use_sliced(1, c, k * k, want.shape[2])
    got = conv.binary_conv2d(xb, wb, c, (stride, stride), padding, pad_mode, 1, "bits", thr, flip, out_groups)
    assert_array_equal(got, want)


def test_counter_start_top_plane_is_the_threshold():
    a = np.array([0, 1, 5, 2 ** 15] + [3] * 60)
    planes = sliced.counter_start(a)[0]  # [PLANES] words, bit b = lane b
    start = sum(((planes[p] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.int64) << p
                for p in range(sliced.PLANES))
    assert_array_equal(start, 2 ** 15 - a)
