import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert.ops.binary import bits, conv, padding


@pytest.mark.parametrize("c,o,h,w,k,stride,pad,groups", [
    (70, 6, 7, 8, 3, 2, (1, 1, 1, 1), 1),
    (130, 66, 6, 7, 3, 1, (1, 0, 2, 1), 2),
    (65, 3, 6, 6, 5, 2, (2, 2, 2, 2), 1),
    (12, 12, 5, 5, 3, 1, (1, 1, 1, 1), 12),
    (8, 4, 3, 3, 5, 1, (2, 2, 2, 2), 1),  # no interior pixel
])
def test_correction_is_the_dot_of_one_padding_minus_zero_padding(c, o, h, w, k, stride, pad, groups):
    rng = np.random.default_rng(c + o)
    xb = bits.bitpack(rng.standard_normal((2, c, h, w)).astype(np.float32), groups)
    wb = bits.pack_conv_weight(rng.standard_normal((o, c // groups, k, k)).astype(np.float32))
    one, zero = (conv.binary_conv_dot_ref(xb, wb, c, (stride, stride), pad, mode, groups) for mode in ("one", "zero"))
    oh, ow = one.shape[2:]
    corr = padding.Correction(wb, c // groups).dense((k, k), (stride, stride), pad, h, w, oh, ow)
    for n in range(2):
        assert_array_equal(corr, (one - zero)[n].transpose(1, 2, 0))
    assert corr.dtype == np.int32


def test_pixel_classes_of_a_3x3_conv_padded_by_one():
    """4x4 input, 3x3 kernel, padding 1: the 4 interior pixels are class 0; corners and edges get one class
    each, whose out-of-bounds taps are the row and column that fall off the image."""
    cls, outside = padding.pixel_classes((3, 3), (1, 1), (1, 1, 1, 1), 4, 4, 4, 4)
    cls = cls.reshape(4, 4)
    assert len(outside) == 9 and not outside[0].any()
    assert len({cls[1, 1], cls[1, 2], cls[2, 1], cls[2, 2]}) == 1 and cls[1, 1] == 0
    assert len(set(cls[[0, 0, 0, 3, 3, 3, 1, 1], [0, 1, 3, 0, 1, 3, 0, 3]].tolist())) == 8
    top_left = outside[cls[0, 0]]
    assert top_left[0].all() and top_left[:, 0].all() and top_left.sum() == 5
    assert outside[cls[0, 1]].tolist() == [[True] * 3, [False] * 3, [False] * 3]
