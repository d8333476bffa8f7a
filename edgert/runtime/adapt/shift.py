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


class InputStatistics:
    """Running moments of the first planned BatchNorm's input, for a policy that leaves BatchNorm alone
    (knn): its shift test compares the source statistics with these. They follow the norm policy's
    rule (running first and second moments, ``momentum`` per sample, a share ``source_weight`` of the
    source's). Only a BatchNorm the model keeps, or folds into its conv/linear, is read; a model whose
    first BatchNorm is folded into binary thresholds or fused with a spiking neuron has no shift test
    here (``available`` is False)."""

    def __init__(self, engine, momentum: float = 0.05, source_weight: float = 0.2):
        plan = engine.artifact.manifest.get("adapt", {}).get("norm", [])
        self.entry = plan[0] if plan and plan[0]["kind"] in ("folded", "kept") else None
        self.available = self.entry is not None and not engine.stateful
        self.momentum, self.source_weight = momentum, source_weight
        if not self.available:
            return
        e, p = self.entry, engine.artifact.params
        key = (lambda k: e[f"source_{k}"]) if e["kind"] == "folded" else (lambda k: e[k])  # noqa: E731
        gamma, beta, self.src_mean, var = (p[key(k)].astype(np.float64) for k in ("gamma", "beta", "mean", "var"))
        self.src_var = var + e["eps"]
        self.src_m2 = var + np.square(self.src_mean)
        c = len(gamma)
        if e["kind"] == "folded":  # the engine runs the source fold: y = s (x - mean) + beta
            s = gamma / np.sqrt(self.src_var)
            ok = np.abs(s) > 1e-12
            self.fold = (beta, self.src_mean, np.where(ok, s, 1.0), ok)
        else:
            self.fold = (np.zeros(c), np.zeros(c), np.ones(c), np.ones(c, np.bool_))
        self.reset()

    def reset(self) -> None:
        self.m1, self.m2 = self.src_mean.copy(), self.src_m2.copy()

    def _tap(self, taps: dict[str, np.ndarray]) -> np.ndarray:
        t = np.ascontiguousarray(taps[self.entry["tap"]], dtype=np.float32)
        return t.reshape(t.shape[0], t.shape[1], -1)

    def gain(self, taps: dict[str, np.ndarray]) -> float:
        """How much better the source statistics fit this batch than the running ones (nats per value)."""
        from edgert.runtime.adapt.norm import mix_moments

        mean, var = mix_moments(self.m1, self.m2, self.src_mean, self.src_m2, self.source_weight)
        return source_gain(self._tap(taps), self.entry["kind"] == "folded", *self.fold, self.src_mean,
                           self.src_var, mean, var + self.entry["eps"])

    def update(self, taps: dict[str, np.ndarray], n: int) -> None:
        from edgert.runtime.adapt.norm import _update_moments

        a = 1.0 - (1.0 - self.momentum) ** n
        _update_moments(self._tap(taps), self.m1, self.m2, a, self.entry["kind"] == "folded", *self.fold)
