"""Bit-sliced binary conv: output channels in bit lanes, carry-save counting, threshold by counter overflow.

The popcount kernel (conv.py) XORs a word of 64 input channels with a word of weights and popcounts it.
Here the roles are transposed: a weight word holds one tap and input channel for 64 *output* channels,
and each input sign is expanded to an all-ones or all-zeros word, so ``mask ^ weights`` sets bit o
where output channel o mismatches. Those words are summed per bit lane, not popcounted: Harley-Seal
carry-save adders (Mula, Kurz, Lemire 2018) fold 32 of them into a 16-bit counter held as 16 bit
planes. The counter starts at ``2**15 - A[o]`` where ``a >= A[o]`` is the channel's fused threshold,
so its top plane is the packed output word directly: no popcount, no integer per output.
A pixel's lanes (``LANES`` per tile, several output rows when the image is narrow) run in the
innermost loop, which LLVM vectorizes (AVX2: 4 pixels per instruction).

Used for groups == 1 with packed-bits output; the NumPy reference is conv.binary_conv_dot_ref +
conv.epilogue_ref, the same as for the popcount kernel.
"""

from __future__ import annotations

import numba
import numpy as np

PLANES = 16  # counter bits: the reduction K must stay below 2**(PLANES - 1)
LANES = 64  # pixels per tile (the expanded input's row pitch, a constant so LLVM sees fixed offsets)
CHUNK = 32  # reduction words folded per carry-save step


@numba.njit(inline="always")
def _csa(a, b, c):
    """Carry-save adder: (carry, sum) bit planes of a + b + c."""
    u = a ^ b
    return (a & b) | (u & c), u ^ c


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _expand(xp, n, iy0, rows, sh, x0, sw, pitch, e, base):
    """Slot at e[base:]: [sw phases][channels][LANES] words, lane r * pitch + q = -(sign bit) of pixel
    (iy0 + r * sh, (x0 + q) * sw + phase)."""
    _, hp, wp, nw = xp.shape
    cp = nw * 64
    row = np.empty(LANES, np.uint64)
    for ph in range(sw):
        for j in range(nw):
            for lane in range(LANES):
                row[lane] = 0
            for r in range(rows):
                iy = iy0 + r * sh
                if iy >= hp:
                    break
                for q in range(pitch):
                    ix = (x0 + q) * sw + ph
                    if ix < wp:
                        row[r * pitch + q] = xp[n, iy, ix, j]
            for b in range(64):
                dst = e[base + (ph * cp + j * 64 + b) * LANES:]  # a view: unsigned-looking index, vectorized
                s = np.uint64(b)
                for lane in range(LANES):
                    dst[lane] = np.uint64(0) - ((row[lane] >> s) & np.uint64(1))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _count_chunk(e, w, st, lanes):
    """Add the 32 words e[i * LANES + lane] ^ w[i] into the bit-sliced counters st[p * LANES + lane]."""
    for lane in range(lanes):
        ones = st[lane]
        twos = st[1 * LANES + lane]
        fours = st[2 * LANES + lane]
        eights = st[3 * LANES + lane]
        sixteens = st[4 * LANES + lane]
        twos_a, ones = _csa(ones, e[lane] ^ w[0], e[LANES + lane] ^ w[1])
        twos_b, ones = _csa(ones, e[2 * LANES + lane] ^ w[2], e[3 * LANES + lane] ^ w[3])
        fours_a, twos = _csa(twos, twos_a, twos_b)
        twos_a, ones = _csa(ones, e[4 * LANES + lane] ^ w[4], e[5 * LANES + lane] ^ w[5])
        twos_b, ones = _csa(ones, e[6 * LANES + lane] ^ w[6], e[7 * LANES + lane] ^ w[7])
        fours_b, twos = _csa(twos, twos_a, twos_b)
        eights_a, fours = _csa(fours, fours_a, fours_b)
        twos_a, ones = _csa(ones, e[8 * LANES + lane] ^ w[8], e[9 * LANES + lane] ^ w[9])
        twos_b, ones = _csa(ones, e[10 * LANES + lane] ^ w[10], e[11 * LANES + lane] ^ w[11])
        fours_a, twos = _csa(twos, twos_a, twos_b)
        twos_a, ones = _csa(ones, e[12 * LANES + lane] ^ w[12], e[13 * LANES + lane] ^ w[13])
        twos_b, ones = _csa(ones, e[14 * LANES + lane] ^ w[14], e[15 * LANES + lane] ^ w[15])
        fours_b, twos = _csa(twos, twos_a, twos_b)
        eights_b, fours = _csa(fours, fours_a, fours_b)
        sixteens_a, eights = _csa(eights, eights_a, eights_b)
        twos_a, ones = _csa(ones, e[16 * LANES + lane] ^ w[16], e[17 * LANES + lane] ^ w[17])
        twos_b, ones = _csa(ones, e[18 * LANES + lane] ^ w[18], e[19 * LANES + lane] ^ w[19])
        fours_a, twos = _csa(twos, twos_a, twos_b)
        twos_a, ones = _csa(ones, e[20 * LANES + lane] ^ w[20], e[21 * LANES + lane] ^ w[21])
        twos_b, ones = _csa(ones, e[22 * LANES + lane] ^ w[22], e[23 * LANES + lane] ^ w[23])
        fours_b, twos = _csa(twos, twos_a, twos_b)
        eights_a, fours = _csa(fours, fours_a, fours_b)
        twos_a, ones = _csa(ones, e[24 * LANES + lane] ^ w[24], e[25 * LANES + lane] ^ w[25])
        twos_b, ones = _csa(ones, e[26 * LANES + lane] ^ w[26], e[27 * LANES + lane] ^ w[27])
        fours_a, twos = _csa(twos, twos_a, twos_b)
        twos_a, ones = _csa(ones, e[28 * LANES + lane] ^ w[28], e[29 * LANES + lane] ^ w[29])
        twos_b, ones = _csa(ones, e[30 * LANES + lane] ^ w[30], e[31 * LANES + lane] ^ w[31])
        fours_b, twos = _csa(twos, twos_a, twos_b)
        eights_b, fours = _csa(fours, fours_a, fours_b)
        sixteens_b, eights = _csa(eights, eights_a, eights_b)
        carry, sixteens = _csa(sixteens, sixteens_a, sixteens_b)
        st[lane] = ones
        st[LANES + lane] = twos
        st[2 * LANES + lane] = fours
        st[3 * LANES + lane] = eights
        st[4 * LANES + lane] = sixteens
        for p in range(5, PLANES):  # ripple the 32s carry up the higher planes
            t = st[p * LANES + lane]
            st[p * LANES + lane] = t ^ carry
            carry = t & carry


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _sliced_conv(xp, wt, bias, by, bx, kh, kw, sh, sw, oh, ow, flip, out):
    """xp: +1-padded packed input [N, Hp, Wp, nw]; wt [nwo, kh, kw, nw * 64] (bit b of word wo: output
    channel wo * 64 + b); bias [bh, bw, nwo, PLANES] counter start planes, per pixel (by = bx = 1) or
    shared (0); flip [nwo]; out [N, oh, ow, nwo]."""
    n_ = xp.shape[0]
    nwo, _, _, cp = wt.shape
    halo = (kw - 1) // sw
    tw = min(ow, LANES - halo)  # output columns per tile
    pitch = tw + halo  # lanes per output row in a tile
    rows = max(1, min(oh, LANES // pitch))  # output rows per tile
    lanes = min(LANES, -(-(rows * pitch - halo) // 4) * 4)
    slot = sw * cp * LANES
    e = np.zeros(kh * slot + LANES, np.uint64)  # + LANES: the last tile's rounded-up lanes read past the end
    key = np.full(kh, -1, np.int64)  # first input row held by each slot
    st = np.empty(nwo * PLANES * LANES, np.uint64)
    for n in range(n_):
        for x0 in range(0, ow, tw):
            key[:] = -1
            for oy0 in range(0, oh, rows):
                for ky in range(kh):
                    k = oy0 * sh + ky
                    if key[k % kh] != k:
                        _expand(xp, n, k, rows, sh, x0, sw, pitch, e, (k % kh) * slot)
                        key[k % kh] = k
                for wo in range(nwo):
                    for p in range(PLANES):
                        for r in range(rows):
                            for q in range(pitch):
                                st[(wo * PLANES + p) * LANES + r * pitch + q] = bias[
                                    min(oy0 + r, oh - 1) * by, min(x0 + q, ow - 1) * bx, wo, p]
                for ky in range(kh):
                    s = ((oy0 * sh + ky) % kh) * slot
                    for kx in range(kw):
                        ph, dq = kx % sw, kx // sw
                        for c0 in range(0, cp, CHUNK):
                            eo = s + (ph * cp + c0) * LANES + dq
                            for wo in range(nwo):
                                _count_chunk(e[eo:], wt[wo, ky, kx, c0:], st[wo * PLANES * LANES:], lanes)
                for r in range(min(rows, oh - oy0)):
                    for q in range(min(tw, ow - x0)):
                        for wo in range(nwo):
                            out[n, oy0 + r, x0 + q, wo] = st[(wo * PLANES + PLANES - 1) * LANES + r * pitch + q] ^ flip[wo]


def prepare(w: np.ndarray, in_channels: int, threshold: np.ndarray, flip: np.ndarray, out_groups: int = 1):
    """Packed conv weight [O, kh, kw, wpg] and fused threshold -> (weights in output-channel bit lanes
    [nwo, kh, kw, wpg * 64], K - threshold per lane, flip words [nwo], output channel per lane or -1); lane
    wo * 64 + b is the channel at bit b of output word wo in the packed output (``out_groups``)."""
    from edgert.ops.binary.bits import pack_groups, unpack_last_ref
    o, kh, kw, wpg = w.shape
    out_groups = pack_groups(o, out_groups)
    ogo = o // out_groups
    wpo = -(-ogo // 64)
    nwo = out_groups * wpo
    slot = np.arange(nwo * 64)
    g, i = slot // (wpo * 64), slot % (wpo * 64)
    chan = np.where(i < ogo, g * ogo + i, -1)  # output channel at each bit lane, -1: padding
    k = kh * kw * in_channels
    lane_bits = np.zeros((nwo * 64, kh, kw, wpg * 64), bool)
    lane_bits[chan >= 0, ..., :in_channels] = unpack_last_ref(w, in_channels)[chan[chan >= 0]]
    wt = np.packbits(lane_bits.reshape(nwo, 64, -1).transpose(0, 2, 1), axis=-1, bitorder="little")
    wt = np.ascontiguousarray(wt).view("<u8").reshape(nwo, kh, kw, wpg * 64).astype(np.uint64)
    # dot = K - 2a - corr < thr  <=>  a >= (K - thr - corr) // 2 + 1; padding lanes never reach their A
    d = np.full(nwo * 64, 2 * k + 2, np.int64)
    d[chan >= 0] = k - threshold.astype(np.int64)[chan[chan >= 0]]
    fl = np.zeros(nwo * 64, bool)
    fl[chan >= 0] = flip.astype(bool)[chan[chan >= 0]]
    return wt, d, _pack_lanes(fl[:, None])[..., 0], chan


def _pack_lanes(b: np.ndarray) -> np.ndarray:
    """bool [..., nwo * 64, P] -> uint64 [..., nwo, P], bit b of word wo from row wo * 64 + b."""
    *lead, n, p = b.shape
    by = np.packbits(b.reshape(*lead, n // 64, 64, p).swapaxes(-1, -2), axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").reshape(*lead, n // 64, p).astype(np.uint64)


def counter_start(a: np.ndarray) -> np.ndarray:
    """Count thresholds A [..., lanes] -> counter start planes [..., nwo, PLANES]: 2**15 - A, so that the top
    plane ends up set exactly when the count reaches A (K < 2**15)."""
    start = (1 << (PLANES - 1)) - np.clip(a, 0, 1 << (PLANES - 1))
    return _pack_lanes(((start[..., None] >> np.arange(PLANES)) & 1).astype(bool))


def sliced_conv2d(x: np.ndarray, prepared, kernel, stride, padding, corr: np.ndarray | None) -> np.ndarray:
    """Packed input [N, H, W, words] -> packed bits [N, oh, ow, nwo]; ``prepared`` from :func:`prepare`,
    ``corr`` [oh, ow, O'] the zero-padding correction of the dot per pixel and lane (None: +1 padding)."""
    wt, d, flip, chan = prepared
    n, h, wd, nw = x.shape
    (kh, kw), (sh, sw), (t, l, b, r) = kernel, stride, padding
    xp = np.zeros((n, h + t + b, wd + l + r, nw), np.uint64)
    xp[:, t:t + h, l:l + wd] = x
    oh, ow = (h + t + b - kh) // sh + 1, (wd + l + r - kw) // sw + 1
    if corr is None:
        bias, by = counter_start(d // 2 + 1)[None, None], 0
    else:
        lane_corr = np.where(chan >= 0, corr[..., np.maximum(chan, 0)], 0)
        bias, by = counter_start((d - lane_corr) // 2 + 1), 1
    out = np.empty((n, oh, ow, wt.shape[0]), np.uint64)
    _sliced_conv(xp, wt, bias, by, by, kh, kw, sh, sw, oh, ow, flip, out)
    return out
