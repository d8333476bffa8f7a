"""Bit-level helpers: popcount for Numba, packing signs into uint64 words (Numba kernel + NumPy reference).

Convention (see nodes.py): bit = 1 means -1, sign(0) = +1, channels innermost, 0-bits (+1) pad each
group's last word; groups of one channel pack densely (pack_groups). Weights for a conv are packed per
output channel over (kh, kw, channels).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount(typingctx, x):
    """llvm.ctpop on a uint64 (POPCNT on x86-64, CNT on Arm; typed int64 so sums stay integer) or on a
    uint8 (in a vectorized loop VPOPCNTB with AVX-512 BITALG, a nibble table with AVX2)."""
    if x not in (types.uint64, types.uint8):
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)
    return (types.int64 if x == types.uint64 else types.uint8)(x), codegen


def _neg_bits(x: np.ndarray) -> np.ndarray:
    """1 where the sign is -1: not (x >= 0), so NaN counts as -1 like torch.where(x >= 0, 1, -1)."""
    return ~(x >= 0)


def pack_groups(channels: int, groups: int) -> int:
    """The word grouping of ``channels`` signs in ``groups`` groups: each group starts a word, except that
    groups of one channel (a depthwise conv's input) pack densely, 64 to a word, as one group would (a
    word per channel would take 64x the memory)."""
    return 1 if groups == channels else groups


def pack_last_ref(bits: np.ndarray, groups: int = 1) -> np.ndarray:
    """Pack a boolean array's last axis (split into word-aligned groups, see pack_groups) into uint64 words."""
    groups = pack_groups(bits.shape[-1], groups)
    *lead, c = bits.shape
    cg = c // groups
    wpg = -(-cg // 64)
    b = bits.reshape(*lead, groups, cg)
    b = np.concatenate([b, np.zeros((*lead, groups, wpg * 64 - cg), bool)], axis=-1)
    by = np.packbits(b.astype(np.uint8), axis=-1, bitorder="little")  # [..., groups, wpg * 8]
    return np.ascontiguousarray(by).view("<u8").astype(np.uint64).reshape(*lead, groups * wpg)


def unpack_last_ref(packed: np.ndarray, channels: int, groups: int = 1) -> np.ndarray:
    """Inverse of pack_last_ref: bool [..., channels]."""
    groups = pack_groups(channels, groups)
    *lead, w = packed.shape
    by = np.ascontiguousarray(packed.astype("<u8")).view(np.uint8).reshape(*lead, groups, w // groups * 8)
    bits = np.unpackbits(by, axis=-1, bitorder="little")[..., : channels // groups].astype(bool)
    return bits.reshape(*lead, channels)


def sign_ref(x: np.ndarray) -> np.ndarray:
    """float32 +1 where x >= 0, else -1 (NumPy reference of ``binary_sign``)."""
    return np.where(x >= 0, np.float32(1), np.float32(-1))


@numba.njit(cache=True, nogil=True)
def _sign_kernel(x, out):
    for i in range(x.size):
        out[i] = 1.0 if x[i] >= 0 else -1.0


def sign(x: np.ndarray) -> np.ndarray:
    """Numba kernel with sign_ref's signature and result."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _sign_kernel(x.reshape(-1), out.reshape(-1))
    return out


def bitpack_ref(x: np.ndarray, groups: int = 1) -> np.ndarray:
    """float [N, C] -> [N, words], or NCHW -> [N, H, W, words] (NumPy reference of ``bitpack``)."""
    neg = _neg_bits(x)
    if x.ndim == 4:
        neg = neg.transpose(0, 2, 3, 1)
    return pack_last_ref(neg, groups)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _pack_nchw(x, groups, out):
    n_, c_, h_, w_ = x.shape
    cg = c_ // groups
    wpg = (cg + 63) // 64
    out[:] = 0
    for n in range(n_):
        for ch in range(c_):
            g, c = ch // cg, ch % cg
            word = g * wpg + c // 64
            bit = np.uint64(1) << np.uint64(c % 64)
            for h in range(h_):
                for w in range(w_):
                    if not x[n, ch, h, w] >= 0:
                        out[n, h, w, word] |= bit


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _pack_nc(x, groups, out):
    n_, c_ = x.shape
    cg = c_ // groups
    wpg = (cg + 63) // 64
    out[:] = 0
    for n in range(n_):
        for ch in range(c_):
            if not x[n, ch] >= 0:
                g, c = ch // cg, ch % cg
                out[n, g * wpg + c // 64] |= np.uint64(1) << np.uint64(c % 64)


def bitpack(x: np.ndarray, groups: int = 1) -> np.ndarray:
    """Numba kernel with bitpack_ref's signature and result."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    groups = pack_groups(x.shape[1], groups)
    wds = groups * -(-(x.shape[1] // groups) // 64)
    if x.ndim == 4:
        out = np.empty((x.shape[0], x.shape[2], x.shape[3], wds), np.uint64)
        _pack_nchw(x, groups, out)
    else:
        out = np.empty((x.shape[0], wds), np.uint64)
        _pack_nc(x, groups, out)
    return out


def pack_conv_weight(w: np.ndarray) -> np.ndarray:
    """float [O, C/groups, kh, kw] -> signs packed as uint64 [O, kh, kw, words(C/groups)]."""
    return pack_last_ref(_neg_bits(np.asarray(w)).transpose(0, 2, 3, 1))


def pack_dense_weight(w: np.ndarray) -> np.ndarray:
    """float [O, K] -> signs packed as uint64 [O, words(K)]."""
    return pack_last_ref(_neg_bits(np.asarray(w)))
