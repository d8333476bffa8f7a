"""The integer threshold that replaces a binary layer's affine epilogue followed by a sign.

Used by the compiler (passes/fold_binary_threshold.py) and by the runtime when adaptation re-derives
thresholds from new BatchNorm statistics (runtime/adapt/norm.py), so both compute the same integers.
"""

from __future__ import annotations

import numpy as np


def thresholds(a: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (threshold int32, flip uint8) with ``bit = (dot < threshold) XOR flip == (a*dot + c < 0)``."""
    a, c = np.asarray(a, np.float64), np.asarray(c, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = -c / a
    thr = np.where(a > 0, np.ceil(x), np.where(a < 0, np.floor(x) + 1, k + 1))
    flip = np.where(a > 0, 0, np.where(a < 0, 1, (c >= 0).astype(np.int64)))
    return np.clip(thr, -k - 1, k + 1).astype(np.int32), flip.astype(np.uint8)
