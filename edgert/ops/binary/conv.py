"""Binary conv and dense: XNOR-popcount Numba kernels and the NumPy references beside them.

The Numba conv reads packed activations directly (no im2col): the input is copied once into a buffer
with a border of 0 words (+1, "one" padding); for ``pad_mode="zero"`` the border taps' contribution
sum(+1 * w) is subtracted again per border pixel (padding.py; exact for both outputs, and fused into the
AVX-512 kernel as one row of limits per class of border pixels).
The inner loop blocks 4 output pixels per loaded weight word.
"""

from __future__ import annotations

import numba
import numpy as np

from edgert.ops.binary import channels, isa, lanes, simd, sliced
from edgert.ops.binary.bits import pack_groups, popcount, unpack_last_ref
from edgert.ops.binary.padding import Correction


# ---- NumPy references ----

def _pm1(packed: np.ndarray, channels: int, groups: int = 1) -> np.ndarray:
    """Packed signs -> int64 array of +-1 over the last axis."""
    return 1 - 2 * unpack_last_ref(packed, channels, groups).astype(np.int64)


def binary_conv_dot_ref(x: np.ndarray, w: np.ndarray, in_channels: int, stride, padding, pad_mode: str,
                        groups: int) -> np.ndarray:
    """Integer dot products [N, O, oh, ow] of the +-1 input (packed [N, H, W, words]) and weights."""
    xs = _pm1(x, in_channels, groups).transpose(0, 3, 1, 2)  # N C H W
    o, kh, kw, _ = w.shape
    cg = in_channels // groups
    ws = _pm1(w, cg).transpose(0, 3, 1, 2)  # O Cg kh kw
    t, l, b, r = padding
    xp = np.pad(xs, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=1 if pad_mode == "one" else 0)
    oh = (xp.shape[2] - kh) // stride[0] + 1
    ow = (xp.shape[3] - kw) // stride[1] + 1
    n = x.shape[0]
    out = np.zeros((n, o, oh, ow), np.int64)
    og = o // groups
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, :, ky: ky + stride[0] * (oh - 1) + 1: stride[0], kx: kx + stride[1] * (ow - 1) + 1: stride[1]]
            for g in range(groups):
                out[:, g * og:(g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch[:, g * cg:(g + 1) * cg], ws[g * og:(g + 1) * og, :, ky, kx])
    return out


def binary_dense_dot_ref(x: np.ndarray, w: np.ndarray, in_features: int) -> np.ndarray:
    """Integer dot products [N, O] of packed +-1 vectors."""
    return _pm1(x, in_features) @ _pm1(w, in_features).T


def epilogue_ref(dot: np.ndarray, output_kind: str, p0: np.ndarray, p1: np.ndarray, out_groups: int = 1) -> np.ndarray:
    """dot [N, O, ...] -> float32 dot * scale + bias, or packed bits (dot < threshold) XOR flip."""
    shape = (1, -1) + (1,) * (dot.ndim - 2)
    if output_kind == "float":
        return dot.astype(np.float32) * p0.reshape(shape) + p1.reshape(shape)
    from edgert.ops.binary.bits import pack_last_ref
    neg = (dot < p0.reshape(shape)) != p1.reshape(shape).astype(bool)
    return pack_last_ref(np.moveaxis(neg, 1, -1), out_groups)


# ---- Numba kernels ----

@numba.njit(cache=True, nogil=True, boundscheck=False)
def _conv_kernel(xp, w, groups, sh, sw, oh, ow, k, corr, use_corr, bits_out, p0f, p1f, thr, flip,
                 out_groups, yf, yb):
    n_ = xp.shape[0]
    o_, kh, kw, wpg = w.shape
    og = o_ // groups
    ogo = o_ // out_groups
    wpo = (ogo + 63) // 64
    if bits_out:
        yb[:] = 0
    for n in range(n_):
        for oy in range(oh):
            iy0 = oy * sh
            for ox0 in range(0, ow, 4):
                p1 = min(ox0 + 1, ow - 1)
                p2 = min(ox0 + 2, ow - 1)
                p3 = min(ox0 + 3, ow - 1)
                for o in range(o_):
                    base = (o // og) * wpg
                    a0 = 0
                    a1 = 0
                    a2 = 0
                    a3 = 0
                    for ky in range(kh):
                        iy = iy0 + ky
                        for kx in range(kw):
                            i0 = ox0 * sw + kx
                            i1 = p1 * sw + kx
                            i2 = p2 * sw + kx
                            i3 = p3 * sw + kx
                            for c in range(wpg):
                                wv = w[o, ky, kx, c]
                                a0 += popcount(xp[n, iy, i0, base + c] ^ wv)
                                a1 += popcount(xp[n, iy, i1, base + c] ^ wv)
                                a2 += popcount(xp[n, iy, i2, base + c] ^ wv)
                                a3 += popcount(xp[n, iy, i3, base + c] ^ wv)
                    for j in range(4):
                        ox = ox0 + j
                        if ox >= ow:
                            break
                        a = a0 if j == 0 else (a1 if j == 1 else (a2 if j == 2 else a3))
                        dot = k - 2 * np.int64(a)
                        if use_corr:
                            dot -= corr[oy, ox, o]
                        if bits_out:
                            if (dot < thr[o]) != (flip[o] != 0):
                                word = (o // ogo) * wpo + (o % ogo) // 64
                                yb[n, oy, ox, word] |= np.uint64(1) << np.uint64((o % ogo) % 64)
                        else:
                            yf[n, o, oy, ox] = np.float32(dot) * p0f[o] + p1f[o]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _conv_dense_kernel(xr, wt, nw, sw, oh, ow, sh, acc):
    """groups == 1: popcount sums of 4 output pixels at once, output channels innermost.

    xr [N, Hp, Wp * nw] (per tap row the (kx, words) run is contiguous), wt [kh, kw * nw, O] (weights
    transposed so the channel loop is contiguous and LLVM vectorizes it: AVX2 XOR + popcount over
    4 channels per instruction); acc[n, oy, ox, o] receives the sums.
    """
    n_ = xr.shape[0]
    kh, run, o_ = wt.shape
    step = sw * nw
    a0 = np.empty(o_, np.int64)
    a1 = np.empty(o_, np.int64)
    a2 = np.empty(o_, np.int64)
    a3 = np.empty(o_, np.int64)
    for n in range(n_):
        for oy in range(oh):
            for ox0 in range(0, ow, 4):
                b0 = ox0 * step
                b1 = min(ox0 + 1, ow - 1) * step
                b2 = min(ox0 + 2, ow - 1) * step
                b3 = min(ox0 + 3, ow - 1) * step
                a0[:] = 0
                a1[:] = 0
                a2[:] = 0
                a3[:] = 0
                for ky in range(kh):
                    iy = oy * sh + ky
                    for j in range(run):
                        x0 = xr[n, iy, b0 + j]
                        x1 = xr[n, iy, b1 + j]
                        x2 = xr[n, iy, b2 + j]
                        x3 = xr[n, iy, b3 + j]
                        for o in range(o_):
                            w = wt[ky, j, o]
                            a0[o] += popcount(x0 ^ w)
                            a1[o] += popcount(x1 ^ w)
                            a2[o] += popcount(x2 ^ w)
                            a3[o] += popcount(x3 ^ w)
                for o in range(o_):
                    acc[n, oy, ox0, o] = a0[o]
                if ox0 + 1 < ow:
                    for o in range(o_):
                        acc[n, oy, ox0 + 1, o] = a1[o]
                if ox0 + 2 < ow:
                    for o in range(o_):
                        acc[n, oy, ox0 + 2, o] = a2[o]
                if ox0 + 3 < ow:
                    for o in range(o_):
                        acc[n, oy, ox0 + 3, o] = a3[o]


def transpose_weight(w: np.ndarray) -> np.ndarray:
    """Packed conv weight [O, kh, kw, wpg] -> [kh, kw * wpg, O], the layout of the groups-1 kernel."""
    o, kh, kw, wpg = w.shape
    return np.ascontiguousarray(w.reshape(o, kh, kw * wpg).transpose(1, 2, 0))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _bits_epilogue(acc, corr, cy, cx, lim, flip, out_groups, yb):
    """Popcounts acc [N, oh, ow, O] -> packed bits: dot = K - 2a - corr < thr, i.e. 2a + corr > lim = K - thr,
    XOR flip (int32 0/1); corr [oh or 1, ow or 1, O] read at (oy * cy, ox * cx). A word's compares run over
    slices (views), which LLVM vectorizes; indexing the whole rows at base + b it did not (6x slower)."""
    n_, oh, ow, o_ = acc.shape
    ogo = o_ // out_groups
    wpo = (ogo + 63) // 64
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                a = acc[n, oy, ox]
                cr = corr[oy * cy, ox * cx]
                for g in range(out_groups):
                    for wi in range(wpo):
                        base = g * ogo + wi * 64
                        nb = min(64, ogo - wi * 64)
                        aw, cw, lw, fw = a[base:base + nb], cr[base:base + nb], lim[base:base + nb], flip[base:base + nb]
                        v = np.uint64(0)
                        for b in range(nb):
                            v |= np.uint64((2 * aw[b] + cw[b] > lw[b]) ^ fw[b]) << np.uint64(b)
                        yb[n, oy, ox, g * wpo + wi] = v


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _float_epilogue_nchw(acc, corr, cy, cx, k, p0f, p1f, yf):
    """Popcounts acc [N, O, oh, ow] -> float32 (K - 2a - corr) * scale + bias; corr [O, oh or 1, ow or 1]."""
    n_, o_, oh, ow = acc.shape
    for n in range(n_):
        for o in range(o_):
            for oy in range(oh):
                a = acc[n, o, oy]
                cr = corr[o, oy * cy]
                y = yf[n, o, oy]
                for ox in range(ow):  # in float32, exact below 2**24, so int32 -> float32 vectorizes
                    y[ox] = (k - np.float32(2) * np.float32(a[ox]) - np.float32(cr[ox * cx])) * p0f[o] + p1f[o]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _float_epilogue_nhwc(acc, corr, cy, cx, k, p0f, p1f, yf):
    """Popcounts acc [N, oh, ow, O] -> float32 NCHW (K - 2a - corr) * scale + bias; corr [oh or 1, ow or 1, O]
    read at (oy * cy, ox * cx). A row at a time: its outputs in channel order into a tile (vectorized), then
    copied out channel by channel (the transpose; writing NCHW straight from the counts ran 2x slower).
    In float32 the integer part is exact below 2**24, so the bits equal float32(dot) * scale + bias."""
    n_, oh, ow, o_ = acc.shape
    tile = np.empty((ow, o_), np.float32)
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                a, cr, t = acc[n, oy, ox], corr[oy * cy, ox * cx], tile[ox]
                for o in range(o_):
                    t[o] = (k - np.float32(2) * np.float32(a[o]) - np.float32(cr[o])) * p0f[o] + p1f[o]
            for o in range(o_):
                y = yf[n, o, oy]
                for ox in range(ow):
                    y[ox] = tile[ox, o]


def use_sliced(groups: int, in_channels: int, taps: int, ow: int) -> bool:
    """Bit-sliced kernel where it beats the popcount one on this CPU (tools/bench/binary.py): groups 1,
    rows wide enough to fill its pixel lanes, and a reduction its 16-bit counter holds."""
    return groups == 1 and ow >= SLICED_MIN_WIDTH and taps * in_channels < 2 ** (sliced.PLANES - 1)


SLICED_MIN_WIDTH = 40  # 28x28x128 measured slightly slower than the popcount kernel, 56x56x64 1.2-1.5x faster


def kernel_kind(w_shape, in_channels: int, groups: int, output_kind: str, ow: int, mst: bool = False) -> str:
    """Which kernel binary_conv2d runs for this conv on this CPU: "lanes" (AVX-512, lanes.py), "simd" (AVX2,
    simd.py), "mst" (a channel-reuse schedule), "sliced" (bit-sliced), "popcount" (Numba, output channels
    vectorized), "channels" (Numba, depthwise and groups of fewer than 8 output channels and at most 8 input
    channels: all output channels vectorized on bytes) or "per-group" (Numba, one group at a time)."""
    if mst:
        return "mst"
    if channels.takes(w_shape, in_channels, groups):
        return "channels"
    return simd_kind(w_shape, groups) or _generic_kind(w_shape, in_channels, groups, output_kind, ow)


def simd_kind(w_shape, groups: int) -> str | None:
    """"lanes" or "simd" where isa.variant()'s SIMD kernel takes this conv, else None."""
    variant = isa.variant()
    if variant == "avx512":
        return "lanes" if lanes.supports(w_shape, groups) else None
    return "simd" if simd.supports(variant, w_shape, groups) else None


def _generic_kind(w_shape, in_channels: int, groups: int, output_kind: str, ow: int) -> str:
    o, kh, kw, _ = w_shape
    if output_kind == "bits" and use_sliced(groups, in_channels, kh * kw, ow):
        return "sliced"
    return "popcount" if groups == 1 or o // groups >= 8 else "per-group"


def describe_kernel(w_shape, in_channels: int, groups: int, output_kind: str, ow: int) -> str:
    """The kernel binary_conv2d runs, by name and ISA variant (for a bench table or a profile)."""
    kind = kernel_kind(w_shape, in_channels, groups, output_kind, ow)
    if kind == "lanes":
        o, kh, kw, wpg = w_shape
        p, q = lanes.block(ow, -(-o // groups // lanes.LANES), kh * kw * wpg)
        return f"avx512 {p}x{8 * q}"  # pixels x output channels
    if kind != "simd":
        return f"generic {kind}"
    p, q = simd.block(isa.variant(), ow)
    return f"{isa.variant()} {p}x{q}"


def simd_weights(w: np.ndarray, groups: int) -> simd.Prepared | lanes.Prepared:
    """The weights as isa.variant()'s SIMD kernel reads them (made once per weight array by the runtime)."""
    variant = isa.variant()
    return lanes.Prepared(w, groups) if variant == "avx512" else simd.Prepared(variant, w, groups)


def binary_conv2d(x: np.ndarray, w: np.ndarray, in_channels: int, stride, padding, pad_mode: str, groups: int,
                  output_kind: str, p0: np.ndarray, p1: np.ndarray, out_groups: int = 1,
                  schedule: tuple[np.ndarray, ...] | None = None, w_t: np.ndarray | None = None,
                  prepared: tuple | None = None, simd_w: simd.Prepared | lanes.Prepared | None = None,
                  pad_corr: Correction | None = None) -> np.ndarray:
    """Binary conv on packed input [N, H, W, words]: float32 NCHW or packed bits [N, oh, ow, words].

    ``schedule`` (groups == 1 only): an MST plan's (order, parent, diff_ptr, diff_idx), see mst.py.
    ``w_t``: ``transpose_weight(w)`` (groups 1) or ``channels.Prepared(w)`` (where channels.takes),
    ``prepared``: ``sliced.prepare(...)``, ``simd_w``: :func:`simd_weights`, ``pad_corr``: the zero padding's
    correction (``padding.Correction(w, cg)``), when the caller keeps them (the runtime does, per node).
    Where the CPU has AVX-512
    VPOPCNTDQ (isa.variant()), groups 1 and groups of whole 8-channel vectors take the channels-across-lanes
    kernel (lanes.py); with AVX2, groups 1 and groups of 8 or more output channels the register-blocked
    record kernel (simd.py); otherwise packed-bits output of a groups-1 conv on wide images takes the
    bit-sliced kernel (sliced.py); depthwise convs and groups of fewer than 8 output and at most 8 input
    channels take the channel kernel (channels.py) on every CPU, the rest the Numba popcount kernels here.
    """
    n, h, wd, nw = x.shape
    o, kh, kw, wpg = w.shape
    out_groups = pack_groups(o, out_groups)  # one channel per group packs densely, as one group
    t, l, b, r = padding
    oh = (h + t + b - kh) // stride[0] + 1
    ow = (wd + l + r - kw) // stride[1] + 1
    cg = in_channels // groups
    og = o // groups
    kind = kernel_kind(w.shape, in_channels, groups, output_kind, ow, schedule is not None)
    use_corr = pad_mode == "zero" and any(padding)
    bits = output_kind == "bits"
    k = kh * kw * cg
    if use_corr and pad_corr is None:
        pad_corr = Correction(w, cg)
    if kind == "channels":
        prep = channels.Prepared(w) if w_t is None else w_t
        if bits and k < channels.FIRE:
            classes = pad_corr.classes((kh, kw), stride, padding, h, wd, oh, ow) if use_corr else None
            return prep.bits(x, og, cg == 1, stride, padding, oh, ow, k, p0, p1, out_groups, classes)
        counts = prep.counts(x, og, cg == 1, stride, padding, oh, ow, np.uint8 if k < 256 else np.int16)
    else:
        xp = np.zeros((n, h + t + b, wd + l + r, nw), np.uint64)
        xp[:, t:t + h, l:l + wd] = x
    variant = isa.variant()
    simd_kernel = kind in ("simd", "lanes")
    if simd_kernel and (simd_w is None or simd_w.variant != variant):
        simd_w = simd_weights(w, groups)
    if kind == "lanes" and (out_groups == 1 or not bits):  # the epilogue, zero padding's included, fused
        return (simd_w.bits if bits else simd_w.float)(xp, stride, oh, ow, kh * kw * cg, p0, p1,
                                                       (padding, h, wd) if use_corr else None)
    if use_corr:
        corr = pad_corr.dense((kh, kw), stride, padding, h, wd, oh, ow)
    else:
        corr = np.zeros((1, 1, o), np.int32)
    f32, i32, u8 = np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.uint8)
    if kind == "sliced":
        prepared = sliced.prepare(w, in_channels, p0, p1, out_groups) if prepared is None else prepared
        return sliced.sliced_conv2d(x, prepared, (kh, kw), stride, padding, corr if use_corr else None)
    if kind == "simd" and not bits:  # counts channels-first, so the float epilogue reads and writes in order
        acc = simd_w.counts(xp, stride, oh, ow, channels_first=True)
        c32 = np.ascontiguousarray(corr.transpose(2, 0, 1))
        yf = np.empty((n, o, oh, ow), np.float32)
        _float_epilogue_nchw(acc, c32, int(use_corr), int(use_corr), np.float32(k), p0.astype(np.float32),
                             p1.astype(np.float32), yf)
        return yf
    if groups == 1 or og >= 8 or kind == "channels":  # output channels vectorized, then the epilogue
        acc = np.empty((n, oh, ow, o), np.int32)
        if kind == "channels":
            acc = counts
        elif simd_kernel:
            acc = simd_w.counts(xp, stride, oh, ow)
        elif schedule is not None:
            from edgert.ops.binary.mst import mst_conv_acc
            mst_conv_acc(xp.reshape(n, xp.shape[1], -1), w.reshape(o, -1), nw, stride[1], stride[0], oh, ow, kw,
                         *schedule, acc)
        elif groups == 1:
            _conv_dense_kernel(xp.reshape(n, xp.shape[1], -1), transpose_weight(w) if w_t is None else w_t, nw,
                               stride[1], oh, ow, stride[0], acc)
        else:
            part = np.empty((n, oh, ow, og), np.int32)
            for g in range(groups):
                xg = np.ascontiguousarray(xp[..., g * wpg:(g + 1) * wpg])
                _conv_dense_kernel(xg.reshape(n, xg.shape[1], -1), transpose_weight(w[g * og:(g + 1) * og]), wpg,
                                   stride[1], oh, ow, stride[0], part)
                acc[..., g * og:(g + 1) * og] = part
        if bits:
            yb = np.empty((n, oh, ow, out_groups * -(-(o // out_groups) // 64)), np.uint64)
            _bits_epilogue(acc, corr, int(use_corr), int(use_corr), (k - p0.astype(np.int64)).astype(np.int32),
                           p1.astype(np.int32), out_groups, yb)
            return yb
        yf = np.empty((n, o, oh, ow), np.float32)
        _float_epilogue_nhwc(acc, corr, int(use_corr), int(use_corr), np.float32(k), p0.astype(np.float32),
                             p1.astype(np.float32), yf)
        return yf
    if bits:
        yb = np.empty((n, oh, ow, out_groups * -(-(o // out_groups) // 64)), np.uint64)
        yf = np.zeros((1, 1, 1, 1), np.float32)
        _conv_kernel(xp, w, groups, stride[0], stride[1], oh, ow, kh * kw * cg, corr, use_corr, True,
                     f32, f32, p0.astype(np.int32), p1.astype(np.uint8), out_groups, yf, yb)
        return yb
    yf = np.empty((n, o, oh, ow), np.float32)
    _conv_kernel(xp, w, groups, stride[0], stride[1], oh, ow, kh * kw * cg, corr, use_corr, False,
                 p0.astype(np.float32), p1.astype(np.float32), i32, u8, 1, yf, np.zeros((1, 1, 1, 1), np.uint64))
    return yf


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _dense_kernel(x, w, k, bits_out, p0f, p1f, thr, flip, yf, yb):
    n_, nw = x.shape
    o_ = w.shape[0]
    if bits_out:
        yb[:] = 0
    for n in range(n_):
        for o in range(o_):
            a = 0
            for c in range(nw):
                a += popcount(x[n, c] ^ w[o, c])
            dot = k - 2 * np.int64(a)
            if bits_out:
                if (dot < thr[o]) != (flip[o] != 0):
                    yb[n, o // 64] |= np.uint64(1) << np.uint64(o % 64)
            else:
                yf[n, o] = np.float32(dot) * p0f[o] + p1f[o]


def dense_weights(w: np.ndarray) -> lanes.Prepared | None:
    """A dense layer's weights [O, words] as a 1x1 conv for the AVX-512 kernel, or None on other CPUs."""
    return lanes.Prepared(w.reshape(w.shape[0], 1, 1, -1)) if isa.variant() == "avx512" else None


LANES_DENSE_WORDS = 65536  # samples x outputs x input words from which the AVX-512 kernel is the faster: its
# ctypes call costs ~5 us more than a Numba one (1 x 512 x 16: 10.5 us vs 7.7; 32 x 256 x 16: 14 vs 39)


def binary_dense(x: np.ndarray, w: np.ndarray, in_features: int, output_kind: str, p0: np.ndarray,
                 p1: np.ndarray, simd_w: lanes.Prepared | None = None) -> np.ndarray:
    """Binary dense on packed input [N, words]: float32 [N, O] or packed bits [N, words(O)]. With AVX-512
    and enough work it runs as a 1x1 conv on one pixel per sample (``simd_w``: :func:`dense_weights`,
    kept by the runtime)."""
    n, o = x.shape[0], w.shape[0]
    if isa.variant() == "avx512" and n * w.size >= LANES_DENSE_WORDS:
        simd_w = dense_weights(w) if simd_w is None else simd_w
        run = simd_w.bits if output_kind == "bits" else simd_w.float
        return run(x.reshape(n, 1, 1, -1), (1, 1), 1, 1, in_features, p0, p1).reshape(n, -1)
    f32, i32, u8 = np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.uint8)
    if output_kind == "bits":
        yb = np.empty((n, -(-o // 64)), np.uint64)
        _dense_kernel(x, w, in_features, True, f32, f32, p0.astype(np.int32), p1.astype(np.uint8),
                      np.zeros((1, 1), np.float32), yb)
        return yb
    yf = np.empty((n, o), np.float32)
    _dense_kernel(x, w, in_features, False, p0.astype(np.float32), p1.astype(np.float32), i32, u8, yf,
                  np.zeros((1, 1), np.uint64))
    return yf


# ---- max-pool on packed bits ----

def binary_max_pool_ref(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """AND of the in-bounds words of each window (a -1 survives only if all are -1)."""
    n, h, wd, nw = x.shape
    t, l, b, r = padding
    oh = (h + t + b - kernel[0]) // stride[0] + 1
    ow = (wd + l + r - kernel[1]) // stride[1] + 1
    out = np.empty((n, oh, ow, nw), np.uint64)
    for i in range(oh):
        for j in range(ow):
            y0, x0 = max(i * stride[0] - t, 0), max(j * stride[1] - l, 0)
            y1, x1 = min(i * stride[0] - t + kernel[0], h), min(j * stride[1] - l + kernel[1], wd)
            out[:, i, j] = np.bitwise_and.reduce(x[:, y0:y1, x0:x1].reshape(n, -1, nw), axis=1)
    return out


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _max_pool_kernel(x, kh, kw, sh, sw, t, l, out):
    n_, h, wd, nw = x.shape
    _, oh, ow, _ = out.shape
    for n in range(n_):
        for i in range(oh):
            y0, y1 = max(i * sh - t, 0), min(i * sh - t + kh, h)
            for j in range(ow):
                x0, x1 = max(j * sw - l, 0), min(j * sw - l + kw, wd)
                for c in range(nw):
                    acc = ~np.uint64(0)
                    for yy in range(y0, y1):
                        for xx in range(x0, x1):
                            acc &= x[n, yy, xx, c]
                    out[n, i, j, c] = acc


def binary_max_pool(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Numba kernel with binary_max_pool_ref's signature and result."""
    n, h, wd, nw = x.shape
    t, l, b, r = padding
    oh = (h + t + b - kernel[0]) // stride[0] + 1
    ow = (wd + l + r - kernel[1]) // stride[1] + 1
    out = np.empty((n, oh, ow, nw), np.uint64)
    _max_pool_kernel(x, kernel[0], kernel[1], stride[0], stride[1], t, l, out)
    return out
