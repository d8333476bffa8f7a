"""The ``knn`` policy: a bounded memory of test features votes with the classifier (forward only).

After AdaNPC (Zhang et al., 2023), without its source-data memory: the device has no source data, so
the memory fills from the stream. Features f are the classifier's input (the compiler keeps them as a
tap), L2-normalized. A sample whose classifier confidence max softmax >= ``confidence`` is stored with
its softmax as a soft label; the memory holds at most ``capacity`` entries, oldest replaced first.
Once it holds ``k`` entries, the prediction is

    p = (1 - weight) softmax(logits) + weight * sum_j w_j q_j / sum_j w_j,   w_j = exp(cos(f, f_j) / tau)

over the ``k`` most similar entries j (soft labels q_j); the policy returns log p, so argmax and
softmax of its output are the mixed prediction. A batch is answered from the memory before it is
stored.

When the source statistics fit a batch better than the running statistics of the stream so far (the
shift reset, edgert.runtime.adapt.shift; InputStatistics below), the memory is emptied: it holds the last
domain's features and pseudo-labels.

On a spiking model a sample is a whole sequence: the logits are the output spike counts (summed over
time), the features the classifier's input summed over time (the last hidden layer's spike counts),
and ``run`` returns log p, [batch, C], instead of the output spikes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from edgert.errors import EdgertError
from edgert.runtime.adapt.base import AdaptingPolicy
from edgert.runtime.adapt.norm import mix_moments, pass_params, update_moments
from edgert.runtime.engine import Engine


@numba.njit(cache=True, nogil=True)
def knn_vote(y: np.ndarray, f: np.ndarray, keys: np.ndarray, labels: np.ndarray, filled: int, k: int,
             tau: float, weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax p of logits y [B, C], L2-normalized features of f [B, D], and log of the mixed
    prediction (1 - weight) p + weight * vote of the k nearest of keys[:filled] (as p when filled < k).
    One pass per row: at batch size 1 NumPy's per-call overhead is most of the cost."""
    b, c = y.shape
    p = np.empty((b, c))
    fn = np.empty(f.shape, np.float32)
    out = np.empty((b, c), np.float32)
    sims = np.empty(filled)
    for i in range(b):
        m = y[i].max()
        tot = 0.0
        for j in range(c):
            p[i, j] = np.exp(np.float64(y[i, j]) - m)
            tot += p[i, j]
        p[i] /= tot
        nrm = max(np.sqrt(np.sum(f[i].astype(np.float64) ** 2)), 1e-12)
        for d in range(f.shape[1]):
            fn[i, d] = f[i, d] / nrm
        mix = p[i].copy()
        if filled >= k:
            for r in range(filled):
                sims[r] = np.dot(fn[i], keys[r])
            near = np.argsort(-sims, kind="mergesort")[:k]  # stable, as ties resolve in the reference
            top = sims[near[0]]
            wsum = 0.0
            vote = np.zeros(c)
            for r in near:
                w = np.exp((sims[r] - top) / tau)
                wsum += w
                vote += w * labels[r]
            mix = (1 - weight) * mix + weight * vote / wsum
        for j in range(c):
            out[i, j] = np.log(max(mix[j], 1e-30))
    return p, fn, out


@numba.njit(cache=True, nogil=True)
def knn_store(p: np.ndarray, f: np.ndarray, keys: np.ndarray, labels: np.ndarray, filled: int, pos: int,
              confidence: float) -> tuple[int, int]:
    """Store each row whose max p >= confidence (feature f as key, p as soft label) in the ring memory
    keys/labels at ``pos``, oldest replaced first; return the new (filled, pos)."""
    capacity = len(keys)
    for i in range(len(p)):
        if p[i].max() >= confidence:
            keys[pos], labels[pos] = f[i], p[i]
            pos = (pos + 1) % capacity
            filled = min(capacity, filled + 1)
    return filled, pos


class InputStatistics:
    """Running moments of the first planned BatchNorm's input, for a policy that leaves BatchNorm alone
    (knn, adapter): its shift test compares the source statistics with these. They follow the norm policy's
    rule (running first and second moments, ``momentum`` per sample, a share ``source_weight`` of the
    source's; the statistics the test compares with are refreshed every ``refresh_every`` samples, as
    the norm policy re-folds). Only a BatchNorm the model keeps, or folds into its conv/linear, is
    read; a model whose first BatchNorm is folded into binary thresholds or fused with a spiking neuron
    has no shift test here (``available`` is False)."""

    def __init__(self, engine, momentum: float = 0.05, source_weight: float = 0.2, refresh_every: int = 8):
        plan = engine.artifact.manifest.get("adapt", {}).get("norm", [])
        self.entry = plan[0] if plan and plan[0]["kind"] in ("folded", "kept") else None
        self.available = self.entry is not None and not engine.stateful
        self.momentum, self.source_weight, self.refresh_every = momentum, source_weight, refresh_every
        if not self.available:
            return
        e, p = self.entry, engine.artifact.params
        self.folded = e["kind"] == "folded"
        key = (lambda k: e[f"source_{k}"]) if e["kind"] == "folded" else (lambda k: e[k])  # noqa: E731
        gamma, beta, self.src_mean, var = (p[key(k)].astype(np.float64) for k in ("gamma", "beta", "mean", "var"))
        self.src_var = var + e["eps"]
        self.src_m2 = var + np.square(self.src_mean)
        c = len(gamma)
        if self.folded:  # the engine runs the source fold: y = s (x - mean) + beta
            s = gamma / np.sqrt(self.src_var)
            ok = np.abs(s) > 1e-12
            self.fold = (beta, self.src_mean, np.where(ok, s, 1.0), ok)
        else:
            self.fold = (np.zeros(c), np.zeros(c), np.ones(c), np.ones(c, np.bool_))
        self._pass_out = np.empty((8, c))  # written at every refresh
        self.reset()

    def reset(self) -> None:
        self.m1, self.m2 = self.src_mean.copy(), self.src_m2.copy()
        self.refresh()

    def refresh(self) -> None:
        """Take the statistics the shift test compares with from the running moments now."""
        self._pending = 0
        mean, var = mix_moments(self.m1, self.m2, self.src_mean, self.src_m2, self.source_weight)
        self._pass = pass_params(self.fold, self.src_mean, self.src_var, mean, var + self.entry["eps"],
                                 self._pass_out)

    def state(self) -> dict[str, np.ndarray]:
        """The running moments, under the state keys a policy saves them as (none when not available)."""
        return {"input_m1": self.m1, "input_m2": self.m2} if self.available else {}

    def load(self, state: dict[str, np.ndarray]) -> None:
        if self.available:
            self.m1 = state["input_m1"].astype(np.float64, copy=True)
            self.m2 = state["input_m2"].astype(np.float64, copy=True)
            self.refresh()

    def update(self, taps: dict[str, np.ndarray], n: int) -> float:
        """Blend in this batch (``n`` samples); return how much better the source statistics fit it than
        the running ones did (nats per value)."""
        t = np.ascontiguousarray(taps[self.entry["tap"]], dtype=np.float32)
        gain = update_moments(t, self.m1, self.m2, 1.0 - (1.0 - self.momentum) ** n, self.folded, *self._pass)
        self._pending += n
        if self._pending >= self.refresh_every:
            self.refresh()
        return gain


class KnnPolicy(AdaptingPolicy):
    """Bounded feature memory voting with the classifier."""

    name = "knn"
    replaces_output = True
    _shift_note = "; memory emptied"

    def __init__(self, engine: Engine, capacity: int = 256, k: int = 8, tau: float = 0.1,
                 weight: float = 0.5, confidence: float = 0.9, shift_margin: float | None = 0.1, **guard: Any):
        super().__init__(engine, **guard)
        plan = engine.artifact.manifest.get("adapt", {})
        self.tap = plan.get("features")
        if self.tap is None:
            raise EdgertError("the 'knn' policy needs a model that ends in a linear classifier (its input "
                              "features are the memory keys); this artifact has none, or was compiled by "
                              "an edgert without adaptation support: recompile it, or use --adapt norm")
        if not (capacity >= k >= 1 and tau > 0 and 0 <= weight <= 1 and 0 <= confidence <= 1):
            raise EdgertError(f"knn options: need capacity >= k >= 1, tau > 0, 0 <= weight <= 1 and "
                              f"0 <= confidence <= 1; got capacity={capacity}, k={k}, tau={tau}, "
                              f"weight={weight}, confidence={confidence}")
        self.capacity, self.k, self.tau, self.weight, self.confidence = capacity, k, tau, weight, confidence
        self._set_shift_margin(shift_margin)
        self._inputs = InputStatistics(engine) if shift_margin is not None else None
        specs = engine.artifact.manifest["specs"]
        self.dim = int(np.prod(specs[self.tap]["shape"][1:]))
        self.classes = int(engine.outputs[0][1].shape[-1])
        self._reset()

    def _reset(self) -> None:
        self.keys = np.zeros((self.capacity, self.dim), np.float32)
        self.labels = np.zeros((self.capacity, self.classes), np.float32)
        self.filled = self.pos = 0
        if self._inputs is not None and self._inputs.available:
            self._inputs.reset()

    def _predict(self, y: np.ndarray, taps: dict[str, np.ndarray]) -> np.ndarray:
        f = taps[self.tap]
        f = (f.sum(axis=0) if self.engine.stateful else f).reshape(len(y), -1)
        self._p, self._f, out = knn_vote(np.ascontiguousarray(y, dtype=np.float32),
                                         np.ascontiguousarray(f, dtype=np.float32), self.keys, self.labels,
                                         self.filled, self.k, self.tau, self.weight)
        return out

    def _adapt(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray]) -> None:
        # softmax and features from _predict on the same batch
        self.filled, self.pos = knn_store(self._p, self._f, self.keys, self.labels, self.filled, self.pos,
                                          self.confidence)
        if self._inputs is not None and self._inputs.available:
            self._gain = self._inputs.update(taps, len(x))

    def _state(self) -> dict[str, np.ndarray]:
        out = {"keys": self.keys, "labels": self.labels, "filled": np.array(self.filled), "pos": np.array(self.pos)}
        if self._inputs is not None:
            out.update(self._inputs.state())
        return out

    def _load(self, state: dict[str, np.ndarray]) -> None:
        self.keys = state["keys"].astype(np.float32, copy=True)
        self.labels = state["labels"].astype(np.float32, copy=True)
        self.filled, self.pos = int(state["filled"]), int(state["pos"])
        if self._inputs is not None:
            self._inputs.load(state)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(memory=self.filled, capacity=self.capacity, k=self.k)
        return out
