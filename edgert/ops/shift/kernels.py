"""Shift conv and dense kernels on fixed-point activations, each beside its plain NumPy reference.

Two Numba paths compute the same integer sums: ``*_shift_add`` adds ``x << e`` or subtracts it,
and ``*_int_mac`` multiplies by the decoded integer ±2^e. Both are exact; which is faster depends on
the core (the compiler picks per target). Accumulators are int32 when the worst case fits, else int64.
"""

from __future__ import annotations

import numba
import numpy as np

from edgert.ops.shift.codes import n_exponents


def quantize(x: np.ndarray, act_bits: int, frac_bits: int) -> np.ndarray:
    """clamp(round_half_even(x * 2^frac_bits)) as int32; the scaling is exact in float32."""
    lim = 2 ** (act_bits - 1)
    return np.clip(np.rint(x * np.float32(2.0 ** frac_bits)), -lim, lim - 1).astype(np.int32)


def acc_dtype(k: int, act_bits: int, bits: int, zero: bool) -> type:
    """int32 if k products of |x_q| <= 2^(act_bits-1) and |m| <= 2^(top exponent) cannot overflow it."""
    worst = k * 2 ** (act_bits - 1) * 2 ** (n_exponents(bits, zero) - 1)
    return np.int32 if worst < 2 ** 31 else np.int64


def to_float(acc: np.ndarray, scale_exp: int, frac_bits: int, bias: np.ndarray | None,
             channel_axis: int) -> np.ndarray:
    """float32(acc) * 2^(s - f) (+ bias): the same two roundings as edgert.nn's custom ops."""
    y = acc.astype(np.float32) * np.float32(2.0 ** (scale_exp - frac_bits))
    if bias is not None:
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        y = y + bias.astype(np.float32).reshape(shape)
    return y


def _pad(xq: np.ndarray, padding: tuple[int, int, int, int]) -> np.ndarray:
    t, l, b, r = padding
    return np.pad(xq, ((0, 0), (0, 0), (t, b), (l, r))) if any(padding) else xq


# ---- conv ------------------------------------------------------------------------------------------

def shift_conv2d_ref(xq, m, stride, padding, dilation, groups, out_hw) -> np.ndarray:
    """Integer conv sums (int64) of fixed-point input ``xq`` [N,C,H,W] with multipliers ``m`` [O,Cg,kh,kw]."""
    xp = _pad(xq.astype(np.int64), padding)
    n = xq.shape[0]
    o, cg, kh, kw = m.shape
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    win = np.lib.stride_tricks.as_strided(
        xp, (n, xp.shape[1], oh, ow, kh, kw),
        (xp.strides[0], xp.strides[1], xp.strides[2] * sh, xp.strides[3] * sw, xp.strides[2] * dh,
         xp.strides[3] * dw), writeable=False)
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    mg = m.astype(np.int64).reshape(groups, o // groups, cg, kh, kw)
    return np.einsum("ngchwij,gocij->ngohw", win, mg).reshape(n, o, oh, ow)


def conv_layout(m: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights laid out [groups, C/groups, kh, kw, O/groups] (output channels innermost, so one input
    value updates a vector of outputs): (multipliers, exponents, negative masks, keep masks), int32.

    The masks make the shift path branch-free: ``((x << e) & keep ^ neg) - neg`` is ±(x << e) or 0.
    """
    o, cg, kh, kw = m.shape
    t = np.ascontiguousarray(m.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 3, 4, 1)).astype(np.int32)
    mag = np.abs(t)
    exps = np.where(mag == 0, 0, np.log2(np.maximum(mag, 1))).astype(np.int32)
    return t, exps, np.where(t < 0, -1, 0).astype(np.int32), np.where(t == 0, 0, -1).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def shift_conv2d_shift_add(xp, exps, negs, keeps, stride, dilation, acc):
    """acc[n, o, y, x] = sum over (c, ky, kx) of ±(xp[n, c, window] << e); xp padded, weights in conv_layout.

    Output channels form the innermost, vectorized loop; zero inputs (after a ReLU, many) are skipped.
    """
    n_b, o_n, oh, ow = acc.shape
    groups, cg, kh, kw, og = exps.shape
    sh, sw = stride
    dh, dw = dilation
    vec = np.zeros(og, acc.dtype)
    for b in range(n_b):
        for g in range(groups):
            for y in range(oh):
                for x in range(ow):
                    vec[:] = 0
                    for c in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                v = acc.dtype.type(xp[b, g * cg + c, y * sh + ky * dh, x * sw + kx * dw])
                                if v == 0:
                                    continue
                                er, nr, kr = exps[g, c, ky, kx], negs[g, c, ky, kx], keeps[g, c, ky, kx]
                                for o in range(og):
                                    vec[o] += (((v << er[o]) & kr[o]) ^ nr[o]) - nr[o]
                    for o in range(og):
                        acc[b, g * og + o, y, x] = vec[o]
    return acc


@numba.njit(cache=True, nogil=True)
def shift_conv2d_int_mac(xp, mt, stride, dilation, acc):
    """acc[n, o, y, x] = sum over (c, ky, kx) of xp[n, c, window] * m; the decoded-integer path."""
    n_b, o_n, oh, ow = acc.shape
    groups, cg, kh, kw, og = mt.shape
    sh, sw = stride
    dh, dw = dilation
    vec = np.zeros(og, acc.dtype)
    for b in range(n_b):
        for g in range(groups):
            for y in range(oh):
                for x in range(ow):
                    vec[:] = 0
                    for c in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                v = acc.dtype.type(xp[b, g * cg + c, y * sh + ky * dh, x * sw + kx * dw])
                                if v == 0:
                                    continue
                                wr = mt[g, c, ky, kx]
                                for o in range(og):
                                    vec[o] += v * wr[o]
                    for o in range(og):
                        acc[b, g * og + o, y, x] = vec[o]
    return acc


@numba.njit(cache=True, nogil=True)
def shift_conv2d_naive(xp, exps, negs, stride, dilation, groups, acc):
    """The straightforward per-element loop (DeepShift's CPU kernel style): one output at a time."""
    n_b, o_n, oh, ow = acc.shape
    cg, kh, kw = exps.shape[1], exps.shape[2], exps.shape[3]
    og = o_n // groups
    for b in range(n_b):
        for o in range(o_n):
            for y in range(oh):
                for x in range(ow):
                    s = acc[b, o, y, x]
                    for c in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                e = exps[o, c, ky, kx]
                                if e >= 0:
                                    v = xp[b, (o // og) * cg + c, y * stride[0] + ky * dilation[0],
                                           x * stride[1] + kx * dilation[1]] << e
                                    s += -v if negs[o, c, ky, kx] else v
                    acc[b, o, y, x] = s
    return acc


# ---- dense ------------------------------------------------------------------------------------------

def shift_linear_ref(xq: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Integer sums (int64): xq [..., K] @ m.T with m [O, K]."""
    return xq.astype(np.int64) @ m.astype(np.int64).T


@numba.njit(cache=True, nogil=True)
def shift_linear_shift_add(xq, exps, negs, acc):
    """acc[r, o] = sum_k ±(xq[r, k] << e[o, k]); acc zeroed by the caller."""
    rows, k_n = xq.shape
    for r in range(rows):
        for o in range(exps.shape[0]):
            s = acc[r, o]
            for k in range(k_n):
                e = exps[o, k]
                if e < 0:
                    continue
                v = xq[r, k] << e
                s += -v if negs[o, k] else v
            acc[r, o] = s
    return acc


@numba.njit(cache=True, nogil=True)
def shift_linear_int_mac(xq, m, acc):
    """acc[r, o] = sum_k xq[r, k] * m[o, k]."""
    rows, k_n = xq.shape
    for r in range(rows):
        for o in range(m.shape[0]):
            s = acc[r, o]
            for k in range(k_n):
                s += xq[r, k] * m[o, k]
            acc[r, o] = s
    return acc


def split_multipliers(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exponents with -1 for zero, negative flags) of integer multipliers ±2^e / 0."""
    mag = np.abs(m)
    exps = np.where(mag == 0, -1, np.log2(np.maximum(mag, 1)).astype(np.int32)).astype(np.int32)
    return exps, m < 0
