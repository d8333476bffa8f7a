"""Zero padding of a binary conv as a correction per class of output pixels.

The kernels pad with 0 bits (+1). Zero padding makes an out-of-bounds tap add 0 to the dot instead of
its weights' sum over the tap's channels, so dot = dot(+1 padding) - corr(pixel, o), corr being the sum
of wsum[o, tap] over the pixel's out-of-bounds taps. Pixels with the same out-of-bounds taps form a
class (a 3x3 conv padded by 1 has 9): the fused kernels read one row of limits per class, not a
correction per pixel and channel.
"""

from __future__ import annotations

import numba
import numpy as np

from edgert.ops.binary.bits import popcount


def _axis_classes(n_out: int, stride: int, k: int, before: int, size: int) -> tuple[np.ndarray, list[tuple]]:
    """Along one axis: each output index's class, and per class its out-of-bounds kernel offsets (class 0
    none)."""
    offsets = [tuple(j for j in range(k) if not 0 <= i * stride + j - before < size) for i in range(n_out)]
    kinds = sorted(set(offsets) | {()}, key=lambda o: (len(o), o))
    return np.array([kinds.index(o) for o in offsets], np.int32), kinds


def pixel_classes(kernel, stride, padding, h: int, wd: int, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
    """(each output pixel's class [oh * ow] int32, out-of-bounds taps per class [classes, kh, kw] bool) of a
    conv on an h x wd input padded by (top, left, bottom, right); class 0, the interior, has none."""
    (kh, kw), (sh, sw), (t, l, _, _) = kernel, stride, padding
    ry, rows = _axis_classes(oh, sh, kh, t, h)
    rx, cols = _axis_classes(ow, sw, kw, l, wd)
    outside = np.zeros((len(rows), len(cols), kh, kw), bool)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            outside[i, j, list(r), :] = True
            outside[i, j, :, list(c)] = True
    return (ry[:, None] * len(cols) + rx[None, :]).reshape(-1).astype(np.int32), outside.reshape(-1, kh, kw)


@numba.njit(cache=True, nogil=True)
def _tap_ones(w):
    """Set bits (-1 weights) of each tap of a packed conv weight [O, kh, kw, words]."""
    o_, kh, kw, words = w.shape
    out = np.zeros((o_, kh, kw), np.int64)
    for o in range(o_):
        for ky in range(kh):
            for kx in range(kw):
                for j in range(words):
                    out[o, ky, kx] += popcount(w[o, ky, kx, j])
    return out


def weight_sums(w: np.ndarray, cg: int) -> np.ndarray:
    """Packed conv weight [O, kh, kw, words] (cg channels per group) -> the +-1 sum of each tap [O, kh, kw]."""
    return cg - 2 * _tap_ones(w)


def class_correction(w: np.ndarray, cg: int, outside: np.ndarray) -> np.ndarray:
    """The correction of each class and output channel [classes, O] int64: its out-of-bounds taps' weight sums."""
    return np.einsum("ckl,okl->co", outside.astype(np.int64), weight_sums(w, cg))


class Correction:
    """The zero padding correction of one conv's weights, kept per input geometry (the runtime makes one per
    weight array: the correction costs more than some convs)."""

    def __init__(self, w: np.ndarray, cg: int):
        self.w, self.cg, self._dense, self._classes = w, cg, {}, {}

    def classes(self, kernel, stride, padding, h: int, wd: int, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
        """(each output pixel's class [oh * ow] int32, the correction per class and channel [classes, O] int64)."""
        key = (tuple(kernel), tuple(stride), tuple(padding), h, wd)
        hit = self._classes.get(key)
        if hit is None:
            cls, outside = pixel_classes(kernel, stride, padding, h, wd, oh, ow)
            hit = self._classes[key] = cls, class_correction(self.w, self.cg, outside)
        return hit

    def dense(self, kernel, stride, padding, h: int, wd: int, oh: int, ow: int) -> np.ndarray:
        """corr [oh, ow, O] int32 of each output pixel and channel (what the popcount kernels' epilogues
        subtract)."""
        key = (tuple(kernel), tuple(stride), tuple(padding), h, wd)
        hit = self._dense.get(key)
        if hit is None:
            cls, corr = self.classes(kernel, stride, padding, h, wd, oh, ow)
            hit = self._dense[key] = corr.astype(np.int32)[cls].reshape(oh, ow, -1)
        return hit
