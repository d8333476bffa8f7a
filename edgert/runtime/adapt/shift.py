"""Shift reset: back to the source when the source describes the stream better than the adapted state.

Continual adaptation carries one domain's state into the next. When the stream moves back towards
the source (a corruption ends, a lens is cleaned), statistics adapted to the old domain fit the new
samples worse than the source statistics do, and the running average needs tens of samples to forget
them. So, per batch, on the first adapted BatchNorm, the policy compares the Gaussian log-likelihood
per value of that BatchNorm's input under the source statistics and under the statistics the model
applies now:

    gain = mean over channels c of  LL(x_c | source mean_c, var_c) - LL(x_c | applied mean_c, var_c),
    LL(x | m, v) = -log(v) / 2 - (E[x^2] - 2 m E[x] + m^2) / (2 v)      (per value, constants dropped)

which needs only each channel's first and second moment over the batch. When gain > ``margin`` the
policy resets to the source and adapts on that batch from there: the batch that showed the shift is
the new domain's first. A likelihood ratio against the source needs no threshold per domain. The
margin (0.1 nats per value) was chosen on a second corrupted digits stream (seed 1, another corruption
order), not on the benchmark's: there margins 0.02-0.1 all end the ten repeats where they began, 0.05
with the lowest error; 0.1 because a small map (a 4x4 input, 4 channels) gives gains that scatter
by ~0.04 around their mean on a stationary stream, and 0.05 reset there by chance.
"""

from __future__ import annotations

import numba
import numpy as np


def source_gain_ref(x: np.ndarray, src_mean: np.ndarray, src_var: np.ndarray, mean: np.ndarray,
                    var: np.ndarray) -> float:
    """NumPy reference: the gain for values x [N, C, ...] of the BatchNorm's input (float64)."""
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    x1, x2 = x.mean(axis=axes), np.square(x).mean(axis=axes)

    def ll(m: np.ndarray, v: np.ndarray) -> np.ndarray:
        return -0.5 * np.log(v) - 0.5 * (x2 - 2 * m * x1 + m * m) / v

    return float(np.mean(ll(src_mean, src_var) - ll(mean, var)))


@numba.njit(cache=True, nogil=True)
def source_gain(t: np.ndarray, folded: bool, beta: np.ndarray, fold_mean: np.ndarray, s: np.ndarray,
                ok: np.ndarray, src_mean: np.ndarray, src_var: np.ndarray, mean: np.ndarray,
                var: np.ndarray) -> float:
    """source_gain_ref for a tap t [N, C, S], in one pass. When ``folded`` the tap is the folded
    output y = s (x - fold_mean) + beta and x's moments are recovered from y's (as the norm policy
    does); channels with ok False carry no information and are left out."""
    n, c, size = t.shape
    total, used = 0.0, 0
    for j in range(c):
        if folded and not ok[j]:
            continue
        acc1 = acc2 = 0.0
        for i in range(n):
            for k in range(size):
                v = np.float64(t[i, j, k])
                acc1 += v
                acc2 += v * v
        x1, x2 = acc1 / (n * size), acc2 / (n * size)
        if folded:
            y1 = x1
            x1 = (y1 - beta[j]) / s[j] + fold_mean[j]
            x2 = max(x2 - y1 * y1, 0.0) / (s[j] * s[j]) + x1 * x1
        ll_src = -0.5 * np.log(src_var[j]) - 0.5 * (x2 - 2 * src_mean[j] * x1 + src_mean[j] ** 2) / src_var[j]
        ll_now = -0.5 * np.log(var[j]) - 0.5 * (x2 - 2 * mean[j] * x1 + mean[j] ** 2) / var[j]
        total += ll_src - ll_now
        used += 1
    return total / max(used, 1)
