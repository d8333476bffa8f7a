"""Binary conv for groups of few channels (depthwise among them): one byte per output channel.

A graph passes such a conv's input packed one group per uint64 word (bits.py), or with one channel per
group (depthwise) densely, 64 channels to a word. The kernel first turns each group's input into a byte
per output channel (a group's channels sit in its word's low byte; a single channel is its bit), then
adds ``popcount(input byte ^ weight byte)`` over the taps a whole output row at a time: ow x O contiguous
bytes, which LLVM vectorizes 32 or 64 bytes to a register. With one input channel per group the xor is
the count, no popcount needed.

For packed-bits output the threshold is fused: each count starts at 128 - A, A the count at which the
output fires (per channel, and per class of border pixels under zero padding, see padding.py), so a
byte's top bit is the output bit and one compare-to-mask per 64 channels packs it. Otherwise the counts
go to conv.py's epilogues. The NumPy reference is conv.binary_conv_dot_ref +
conv.epilogue_ref, as for every binary conv.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir as llir
from numba import types
from numba.extending import intrinsic

from edgert.ops.binary.bits import pack_last_ref, popcount

RUN = 2048  # bytes at least in one vectorized run (a tap's weights repeated to fill it; 3x3: 18 KB in L1)
FIRE = 128  # a fused count's byte reaches this, its top bit, when the output fires


def takes(w_shape, in_channels: int, groups: int) -> bool:
    """Whether this kernel runs the conv: groups of one input channel (their input packed densely, which
    only this kernel reads), and groups of fewer than 8 output channels (no SIMD kernel takes them) and at
    most 8 input channels (a byte), with at most 2**15 - 1 terms per output."""
    o, kh, kw, _ = w_shape
    cg = in_channels // groups
    return groups > 1 and (cg == 1 or o // groups < 8 and cg <= 8 and kh * kw * cg < 2 ** 15)


def weights(w: np.ndarray) -> np.ndarray:
    """Packed conv weight [O, kh, kw, 1] (a group's channels in a word's low byte) -> bytes [kh, kw, R * O],
    each tap's R = ceil(RUN / O) times over: the kernel's layout (made once per weight array)."""
    taps = (w[..., 0] & np.uint64(0xFF)).astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(np.tile(taps, (1, 1, -(-RUN // w.shape[0]))))


@intrinsic
def _bit_bytes(typingctx, v, dst, at):
    """dst[at + i] = bit i of the uint64 v, for i < 64: vpmovm2b with AVX-512BW (shuffles with AVX2)."""
    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[1])(context, builder, args[1])
        vec = llir.VectorType(llir.IntType(8), 64)
        one = builder.zext(builder.bitcast(args[0], llir.VectorType(llir.IntType(1), 64)), vec)
        builder.store(one, builder.bitcast(builder.gep(arr.data, [args[2]]), vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(v, dst, at), codegen


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _input_bytes(x, groups, og, t, l, sw, xb):
    """xb[ph, n, t + y, q, o] = the input of output channel o's group at x[n, y, i] (q * sw + ph = l + i)
    as a byte: the group's word's low byte, or with one channel per group (packed densely) its bit. The
    columns are split by phase so that each tap of a strided row reads contiguous bytes; xb's border is
    left as it is (0: +1 padding)."""
    n_, h, w, nw = x.shape
    o_ = groups * og
    dense = nw != groups
    for n in range(n_):
        for y in range(h):
            for i in range(w):
                src, dst = x[n, y, i], xb[(l + i) % sw, n, t + y, (l + i) // sw]
                if dense and og == 1:
                    whole = o_ - o_ % 64
                    for j in range(whole // 64):
                        _bit_bytes(src[j], dst, 64 * j)
                    for o in range(whole, o_):  # the last word's bits (whole bytes would overrun the pixel)
                        dst[o] = np.uint8((src[o >> 6] >> np.uint64(o & 63)) & np.uint64(1))
                elif og == 1:
                    for o in range(o_):
                        dst[o] = np.uint8(src[o] & np.uint64(0xFF))
                else:
                    for g in range(groups):
                        v = (src[g >> 6] >> np.uint64(g & 63)) & np.uint64(1) if dense else src[g] & np.uint64(0xFF)
                        for j in range(og):
                            dst[g * og + j] = np.uint8(v)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _counts(xb, wr, sh, oh, ow, single, start, cls, acc):
    """acc[n, oy, ox * O + o] = start[cls[oy * ow + ox], o] + the popcounts of input byte ^ weight byte
    over the taps (xb from ``_input_bytes``, wr from ``weights``; acc bytes where the counts stay below
    256, else int16; its rows may be longer than ow * O). A tap adds a whole output row in runs of wr's
    length; with ``single`` (one input channel per group) the bytes are 0 or 1 and need no popcount. (Three
    taps per pass over the sums ran 20% slower: Numba widens the byte sums.)"""
    sw, n_ = xb.shape[0], xb.shape[1]
    o_ = xb.shape[4]
    kh, kw, span = wr.shape
    row = ow * o_
    for n in range(n_):
        for oy in range(oh):
            a = acc[n, oy]
            for ox in range(ow):
                s, at = start[cls[oy * ow + ox]], ox * o_
                for j in range(o_):
                    a[at + j] = s[j]
            for ky in range(kh):
                for kx in range(kw):
                    xs, ws = xb[kx % sw, n, oy * sh + ky].reshape(-1)[(kx // sw) * o_:], wr[ky, kx]
                    for c0 in range(0, row, span):
                        xc, ac = xs[c0:], a[c0:]
                        if single:
                            for j in range(min(span, row - c0)):
                                ac[j] += xc[j] ^ ws[j]
                        else:
                            for j in range(min(span, row - c0)):
                                ac[j] += popcount(np.uint8(xc[j] ^ ws[j]))


@intrinsic
def _top_bits(typingctx, a, k):
    """A uint64 whose bit i is the top bit of byte a[k + i] (a uint8 array): vpmovb2m with AVX-512BW,
    two vpmovmskb with AVX2."""
    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        vec = llir.VectorType(llir.IntType(8), 64)
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), vec.as_pointer())
        top = builder.icmp_signed("<", builder.load(ptr, align=1), llir.Constant(vec, [0] * 64))
        return builder.bitcast(top, llir.IntType(64))

    return types.uint64(a, k), codegen


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _sign_words(acc, o_, ow, out_groups, flip, yb):
    """yb[n, oy, ox, g * wpo + j] = the top bits of pixel ox's bytes for channels g * ogo + 64 j .. (ogo
    channels per output group, wpo words each; the last word of a group masked: bytes past it belong to
    the next group or pixel, and rows end 64 bytes past ow * O), XOR flip[g * wpo + j]; out_groups as
    bits.pack_groups gives it."""
    n_, oh = acc.shape[0], acc.shape[1]
    ogo = o_ // out_groups
    wpo = (ogo + 63) // 64
    last = np.uint64(2 ** 64 - 1) if ogo % 64 == 0 else (np.uint64(1) << np.uint64(ogo % 64)) - np.uint64(1)
    for n in range(n_):
        for oy in range(oh):
            a, y = acc[n, oy], yb[n, oy]
            for ox in range(ow):
                yr = y[ox]
                for g in range(out_groups):
                    for j in range(wpo):
                        m = _top_bits(a, ox * o_ + g * ogo + 64 * j)
                        if j == wpo - 1:
                            m &= last
                        yr[g * wpo + j] = m ^ flip[g * wpo + j]


def _start(k: int, thr: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Count starts [classes, O] uint8: the output fires (dot = k - 2a - corr < thr) when a >= A, so the
    count starts at FIRE - A, A clipped to 0 .. k + 1 (always, never); needs k < FIRE."""
    a = (k - thr.astype(np.int64) - corr) // 2 + 1
    return (FIRE - np.clip(a, 0, k + 1)).astype(np.uint8)


class Prepared:
    """A conv's weights as the kernel reads them (``weights``), made once per weight array, with the fused
    threshold's count starts and flip words kept for the arrays last passed."""

    def __init__(self, w: np.ndarray):
        self.o, self.w = w.shape[0], weights(w)
        self._last: tuple = ()

    def counts(self, x, og, single, stride, padding, oh, ow, dtype) -> np.ndarray:
        """The popcounts [N, oh, ow, O] (dtype uint8 or int16) with +1 padding, for conv.py's epilogues; x the
        packed input [N, H, W, groups], og output channels per group, ``single``: one input channel each."""
        n, o = x.shape[0], self.o
        acc = np.empty((n, oh, ow * o), dtype)
        _counts(_padded_bytes(x, og, stride, padding, o), self.w, stride[0], oh, ow, single, np.zeros((1, o), dtype),
                np.zeros(oh * ow, np.int32), acc)
        return acc.reshape(n, oh, ow, o)

    def bits(self, x, og, single, stride, padding, oh, ow, k: int, thr, flip, out_groups: int,
             classes) -> np.ndarray:
        """Packed output bits [N, oh, ow, words(O, out_groups)]: dot = k - 2a - corr < thr, XOR flip, the
        threshold fused into the counts; ``classes`` (pixel classes, correction per class) from
        padding.Correction.classes, or None for +1 padding. Needs k < FIRE."""
        n, o = x.shape[0], self.o
        last = self._last
        key = (k, oh, ow, out_groups)
        if not (last and last[0] is thr and last[1] is flip and last[2] is classes and last[3] == key):
            cls, corr = classes if classes is not None else (np.zeros(oh * ow, np.int32), np.zeros((1, o), np.int64))
            words = pack_last_ref(np.asarray(flip, bool)[None], out_groups)[0]
            self._last = last = (thr, flip, classes, key, (_start(k, thr, corr), cls, words))
        start, cls, words = last[4]
        acc = np.empty((n, oh, ow * o + 64), np.uint8)
        _counts(_padded_bytes(x, og, stride, padding, o), self.w, stride[0], oh, ow, single, start, cls, acc)
        yb = np.empty((n, oh, ow, len(words)), np.uint64)
        _sign_words(acc, o, ow, out_groups, words, yb)
        return yb


def _padded_bytes(x, og, stride, padding, o) -> np.ndarray:
    """The input as ``_input_bytes`` lays it out, in a zero (+1) border of the padding."""
    n, h, wd, _ = x.shape
    t, l, b, r = padding
    sw = stride[1]
    xb = np.zeros((sw, n, h + t + b, -(-(wd + l + r) // sw), o), np.uint8)
    _input_bytes(np.ascontiguousarray(x), o // og, og, t, l, sw, xb)
    return xb
