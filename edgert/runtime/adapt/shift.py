"""Shift reset: back to the source when the source describes the stream better than the adapted state.

Continual adaptation carries one domain's state into the next. When the stream moves back towards
the source (a corruption ends, a lens is cleaned), statistics adapted to the old domain fit the new
samples worse than the source statistics do, and the running average needs tens of samples to forget
them. So, per batch, on the first adapted BatchNorm, the policy compares the Gaussian log-likelihood
per value of that BatchNorm's input under the source statistics and under the statistics the model
applies now:

    gain = mean over channels c of  LL(x_c | source mean_c, var_c) - LL(x_c | applied mean_c, var_c),
    LL(x | m, v) = -log(v) / 2 - (E[x^2] - 2 m E[x] + m^2) / (2 v)      (per value, constants dropped)

which needs only each channel's first and second moment over the batch, so the pass that updates the
running moments computes it too (edgert.runtime.adapt.norm.update_moments; ``source_gain_ref`` below is
its NumPy reference). When gain > ``margin`` the
policy resets to the source, answers the batch again and adapts on it from there: the batch that
showed the shift is the new domain's first. A likelihood ratio against the source needs no threshold per domain. The
margin (0.1 nats per value) was chosen on a second corrupted digits stream (seed 1, another corruption
order), not on the benchmark's: there margins 0.02-0.1 all end the ten repeats where they began, 0.05
with the lowest error; 0.1 because a small map (a 4x4 input, 4 channels) gives gains that scatter
by ~0.04 around their mean on a stationary stream, and 0.05 reset there by chance.
"""

from __future__ import annotations

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
