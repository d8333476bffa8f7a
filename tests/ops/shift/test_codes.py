import numpy as np
import pytest

from edgert.errors import IRValidationError
from edgert.ops.shift import codes


def test_three_bit_zero_free_alphabet_is_plus_minus_1_2_4_8():
    w = np.array([1, 2, 4, 8, -1, -2, -4, -8], np.float32) * 2.0 ** -5
    c = codes.encode(w, 3, False, -5)
    assert c.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # sign bit 4, exponent in the low bits
    assert codes.decode(c, 3, False).tolist() == [1, 2, 4, 8, -1, -2, -4, -8]


@pytest.mark.parametrize("bits", [3, 4, 5])
@pytest.mark.parametrize("zero", [False, True])
def test_encode_pack_unpack_decode_round_trip(bits, zero):
    rng = np.random.default_rng(bits)
    n_exp = codes.n_exponents(bits, zero)
    m = rng.choice([-1, 1], 1001) * 2 ** rng.integers(0, n_exp, 1001)
    if zero:
        m[::7] = 0
    packed = codes.pack(codes.encode(m * 2.0 ** -3, bits, zero, -3), bits)
    assert packed.nbytes == (1001 * bits + 7) // 8
    assert np.array_equal(codes.decode(codes.unpack(packed, bits, 1001), bits, zero), m)


@pytest.mark.parametrize("w, message", [
    ([0.0, 1.0], "contain 0, but the layer is zero-free"),
    ([3.0], "not ±2\\^\\(e \\+ 0\\)"),
    ([16.0], "e in \\[0, 3\\]"),
])
def test_weights_outside_the_alphabet_are_refused(w, message):
    with pytest.raises(IRValidationError, match=message):
        codes.encode(np.array(w), 3, False, 0)
