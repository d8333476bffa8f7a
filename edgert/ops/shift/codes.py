"""Shift weights: w = sign * 2^(e + scale_exp), stored as packed ``bits``-wide codes.

A code is ``sign_bit << (bits - 1) | e`` with sign_bit 1 for negative. Zero-free (DenseShift, the
default) uses every exponent code: 3 bits give {±1, ±2, ±4, ±8} * 2^scale_exp. With ``zero=True``
(DeepShift style) the top exponent code means w = 0, leaving 2^(bits-1) - 1 exponents.
Codes are packed little-endian into a uint8 stream, so an artifact holds ``bits`` bits per weight.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import IRValidationError

BITS = (3, 4, 5)


def n_exponents(bits: int, zero: bool) -> int:
    """How many exponents a code of ``bits`` bits can name."""
    return 2 ** (bits - 1) - (1 if zero else 0)


def encode(w: np.ndarray, bits: int, zero: bool, scale_exp: int) -> np.ndarray:
    """Codes (uint8, one per weight) of weights that are exactly ±2^(e + scale_exp), or 0 when ``zero``."""
    w = np.asarray(w, np.float64)
    n_exp = n_exponents(bits, zero)
    mag = np.abs(w)
    is_zero = mag == 0
    if is_zero.any() and not zero:
        raise IRValidationError("shift weights contain 0, but the layer is zero-free; "
                                "train with zero=True (DeepShift style) to allow zero weights")
    with np.errstate(divide="ignore"):
        e = np.log2(np.where(is_zero, 1.0, mag)) - scale_exp
    e_int = np.rint(e)
    bad = ~is_zero & ((e != e_int) | (e_int < 0) | (e_int >= n_exp))
    if bad.any():
        first = w.ravel()[np.flatnonzero(bad.ravel())[0]]
        raise IRValidationError(
            f"weight {first!r} is not ±2^(e + {scale_exp}) with e in [0, {n_exp - 1}] "
            f"({bits} bits{', zero allowed' if zero else ', zero-free'}); export the layer from "
            "edgert.nn.ShiftConv2d/ShiftLinear, which quantizes its weights this way")
    codes = ((w < 0).astype(np.uint8) << (bits - 1)) | e_int.astype(np.uint8)
    if zero:
        codes = np.where(is_zero, np.uint8(n_exp), codes)  # the top exponent code, sign bit clear
    return codes.astype(np.uint8)


def decode(codes: np.ndarray, bits: int, zero: bool) -> np.ndarray:
    """Integer weight multipliers ±2^e (int32), 0 for the zero code; the inverse of ``encode``."""
    codes = np.asarray(codes, np.int32)
    e = codes & ((1 << (bits - 1)) - 1)
    neg = codes >> (bits - 1)
    m = np.where(neg == 1, -1, 1) * (1 << e)
    if zero:
        m = np.where(e == n_exponents(bits, zero), 0, m)
    return m.astype(np.int32)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``bits``-wide codes into bytes, little-endian within the stream."""
    c = np.asarray(codes, np.uint8).ravel()
    stream = ((c[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).ravel()
    return np.packbits(stream, bitorder="little")


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of a packed stream (inverse of ``pack``)."""
    stream = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[:count * bits]
    if stream.size != count * bits:
        raise IRValidationError(f"packed shift weights hold {packed.size} bytes, too few for {count} "
                                f"codes of {bits} bits")
    return (stream.reshape(count, bits).astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(
        axis=1).astype(np.uint8)


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8
