"""The ``norm`` policy: BatchNorm statistics re-estimated from the stream, forward only.

Per BatchNorm, per channel, running averages of the first and second moment of its input x:

    m1 <- (1 - a) m1 + a mean(x),   m2 <- (1 - a) m2 + a mean(x^2),   a = 1 - (1 - momentum)^n

over the batch and spatial positions (n = batch size, so ``momentum`` is per sample and the time
constant does not depend on the batch size). The statistics applied keep a share ``source_weight`` of
the source's (as alpha-BN does, You et al. 2021): M1 = (1 - w) m1 + w mean_src, M2 likewise, then
mean = M1, var = M2 - M1^2. The prior halves the damage of a short-lived or badly estimated shift
(at batch size 1 a single image moves the estimate); the defaults (momentum 0.05, source_weight 0.2)
were chosen on a second corrupted digits stream (seed 1), not on the benchmark's. The moments update
every batch; the weights are re-folded once ``refold_every`` samples have passed (at batch size 1 the
re-fold costs about an inference, so doing it every 8th sample keeps the step near one inference).
A batch of ``rerun_from`` samples or more (default 16) is answered after its own update, as
batch-statistics methods do: layer by layer, each BatchNorm's moments taken from a forward through the
already updated layers before it (L + 1 forwards for L BatchNorms); smaller batches are answered with
the statistics so far (one forward). Averaging moments, not
per-batch variances, keeps the between-sample spread, so it is safe at batch size 1. A folded
BatchNorm is re-folded into its conv/linear (w' = w*s, b' = (b - mean)*s + beta, s = gamma/sqrt(var+eps));
its input moments are recovered from the moments of the folded output y = s (x - mean) + beta.
The same pass measures how much better the source statistics fit the batch at the first BatchNorm
than the applied ones; above ``shift_margin`` the policy starts again from the source (the shift reset,
edgert.runtime.adapt.shift).
A BatchNorm folded with the following sign into a binary layer's integer thresholds (binary models)
takes its input moments from the layer's float output, recomputed from the layer's packed input
(one more binary conv per step), and its thresholds are re-derived exactly as the compiler derives them.
On a spiking model a sample is a whole sequence: moments are over time, batch and space (n = the batch
size); a BatchNorm folded into a Linear fused with its neuron takes its input from the layer's input
times the source weight (one more matmul per step) and is re-folded into the transposed weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba
import numpy as np

from edgert.errors import EdgertError
from edgert.ops.binary.threshold import thresholds
from edgert.runtime.adapt.base import AdaptingPolicy
from edgert.runtime.engine import Engine


def moments_ref(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and mean square over every other axis, in float64 (NumPy reference)."""
    t = t.astype(np.float64, copy=False)
    axes = (0,) + tuple(range(2, t.ndim))
    return t.mean(axis=axes), np.square(t).mean(axis=axes)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def add_sums(t: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> None:
    """Add the per-channel sums of t [N, C, S] and of its squares (float64) into s1, s2 [C]. The sums
    may be reordered (fastmath "reassoc"): in order, each add waits for the one before, and the
    batch-1 step spends most of its update there."""
    n, c, size = t.shape
    for j in range(c):
        acc1 = acc2 = 0.0
        for i in range(n):
            for k in range(size):
                v = np.float64(t[i, j, k])
                acc1 += v
                acc2 += v * v
        s1[j] += acc1
        s2[j] += acc2


@numba.njit(cache=True, nogil=True)
def update_from_sums(s1: np.ndarray, s2: np.ndarray, count: int, m1: np.ndarray, m2: np.ndarray, a: float,
                     folded: bool, ok: np.ndarray, p: np.ndarray) -> float:
    """NormPolicy._update_ref from per-channel sums s1, s2 of ``count`` values per channel: their
    moments, inverted through the fold y = s (x - mean) + beta when ``folded`` (channels with ok False
    kept), blended into m1, m2. Returns, from the same moments, the shift test's gain
    (edgert.runtime.adapt.shift) of the source statistics over the applied ones. p [8, C] holds, per
    channel: beta, mean and s of the fold, the source mean and variance, the applied mean and variance
    (variances with eps), and 0.5 ln(applied variance / source variance) (two logs per channel cost as
    much as the sums); one array, because each argument costs Numba's dispatcher a type check."""
    gain, used = 0.0, 0
    for j in range(len(s1)):
        if folded and not ok[j]:
            continue
        t1, t2 = s1[j] / count, s2[j] / count
        if folded:
            x1 = (t1 - p[0, j]) / p[2, j] + p[1, j]
            t2 = max(t2 - t1 * t1, 0.0) / (p[2, j] * p[2, j]) + x1 * x1
            t1 = x1
        gain += (p[7, j] - 0.5 * (t2 - 2 * p[3, j] * t1 + p[3, j] ** 2) / p[4, j]
                 + 0.5 * (t2 - 2 * p[5, j] * t1 + p[5, j] ** 2) / p[6, j])
        used += 1
        m1[j] = (1 - a) * m1[j] + a * t1
        m2[j] = (1 - a) * m2[j] + a * t2
    return gain / max(used, 1)


@numba.njit(cache=True, nogil=True)
def update_moments(t: np.ndarray, m1: np.ndarray, m2: np.ndarray, a: float, folded: bool, ok: np.ndarray,
                   p: np.ndarray) -> float:
    """update_from_sums on the values of t [N, C, ...] (contiguous), in one dispatch (the batch-1 step
    calls it per layer)."""
    t3 = t.reshape((t.shape[0], t.shape[1], -1))
    s1, s2 = np.zeros(t.shape[1]), np.zeros(t.shape[1])
    add_sums(t3, s1, s2)
    return update_from_sums(s1, s2, t3.shape[0] * t3.shape[2], m1, m2, a, folded, ok, p)


@numba.njit(cache=True, nogil=True)
def pass_params(fold: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], src_mean: np.ndarray,
                src_var: np.ndarray, mean: np.ndarray, var: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """update_from_sums' ``ok`` and ``p`` from a fold (beta, mean, s, ok) and the two sets of statistics,
    written into ``out`` [8, C] float64 (at every re-fold, per layer: NumPy took ~6 us for the rows)."""
    beta, fold_mean, s, ok = fold
    for j in range(len(ok)):
        out[0, j], out[1, j], out[2, j] = beta[j], fold_mean[j], s[j]
        out[3, j], out[4, j], out[5, j], out[6, j] = src_mean[j], src_var[j], mean[j], var[j]
        out[7, j] = 0.5 * np.log(var[j] / src_var[j])
    return ok, out


@numba.njit(cache=True, nogil=True)
def refold_layer(w: np.ndarray, b: np.ndarray, gamma: np.ndarray, beta: np.ndarray, m1: np.ndarray, m2: np.ndarray,
                 src_m1: np.ndarray, src_m2: np.ndarray, share: float, eps: float, src_var_eps: np.ndarray,
                 p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A folded BatchNorm's re-fold in one call: the statistics to apply (mix_moments), the folded weight
    and bias (refold), and the shift test's parameters written into p (pass_params; rows 0-2 are then
    the fold's beta, mean and s). Returns w', b' and where s is not 0."""
    mean, var = mix_moments(m1, m2, src_m1, src_m2, share)
    w_new, b_new, s, ok = refold(w, b, gamma.astype(np.float64), beta.astype(np.float64), mean, var, eps)
    pass_params((beta.astype(np.float64), mean, s, ok), src_m1, src_var_eps, mean, var + eps, p)
    return w_new, b_new, ok


@numba.njit(cache=True, nogil=True)
def mix_moments(m1: np.ndarray, m2: np.ndarray, src_m1: np.ndarray, src_m2: np.ndarray,
                w: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance from running moments m1, m2 with a share w of the source moments."""
    a1 = (1 - w) * m1 + w * src_m1
    a2 = (1 - w) * m2 + w * src_m2
    return a1, np.maximum(a2 - a1 * a1, 0.0)


@numba.njit(cache=True, nogil=True)
def refold(w: np.ndarray, b: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
           var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm folded into a layer with weight w [O, K] (float32) and bias b: w' = w s (float32),
    b' = (b - mean) s + beta, s = gamma / sqrt(var + eps); also s (1 where |s| is 0) and where it is not 0.
    One call instead of a dozen small NumPy operations per layer, at every re-fold."""
    s = gamma / np.sqrt(var + eps)
    ok = np.abs(s) > 1e-12
    w_new = np.empty_like(w)
    for o in range(w.shape[0]):
        so = np.float32(s[o])
        for k in range(w.shape[1]):
            w_new[o, k] = w[o, k] * so
    b_new = ((b - mean) * s + beta).astype(np.float32)
    return w_new, b_new, np.where(ok, s, 1.0), ok


def moments(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same as moments_ref in one pass (add_sums, Numba): NumPy's multi-axis means cost ~30 us each on
    small maps."""
    t = np.ascontiguousarray(t, dtype=np.float32)
    t = t.reshape(t.shape[0], t.shape[1], -1)
    s1, s2 = np.zeros(t.shape[1]), np.zeros(t.shape[1])
    add_sums(t, s1, s2)
    return s1 / (t.shape[0] * t.shape[2]), s2 / (t.shape[0] * t.shape[2])


class NormPolicy(AdaptingPolicy):
    """Running-average BatchNorm statistics, re-folded into the weights after every batch."""

    name = "norm"

    def __init__(self, engine: Engine, momentum: float = 0.05, source_weight: float = 0.2,
                 refold_every: int = 8, rerun_from: int | None = 16, shift_margin: float | None = 0.1,
                 **guard: Any):
        super().__init__(engine, **guard)
        self.rerun_from = rerun_from
        if not 0 < momentum <= 1:
            raise EdgertError(f"norm policy: momentum={momentum} must be in (0, 1]")
        if not 0 <= source_weight <= 1:
            raise EdgertError(f"norm policy: source_weight={source_weight} must be in [0, 1]")
        self.source_weight = source_weight
        self._set_shift_margin(shift_margin)
        if refold_every < 1:
            raise EdgertError(f"norm policy: refold_every={refold_every} must be >= 1")
        self.momentum, self.refold_every, self._pending, self.refolds = momentum, refold_every, 0, 0
        plan = engine.artifact.manifest.get("adapt", {})
        self.layers = list(plan.get("norm", []))
        if not self.layers:
            raise EdgertError("the 'norm' policy found no BatchNorm to adapt in this artifact (or it was "
                              "compiled by an edgert without adaptation support); recompile a model with "
                              "BatchNorm, or run with --adapt none")
        p = engine.artifact.params
        f64 = lambda name: p[name].astype(np.float64)  # noqa: E731
        self._src: dict[str, dict[str, np.ndarray]] = {}
        self._layer_out: dict[str, Any] = {}  # BatchNorms folded into binary thresholds: their layer
        for e in self.layers:
            if e["kind"] in ("folded", "fused"):
                self._src[e["bn"]] = {k: f64(e[f"source_{k}"]) for k in ("gamma", "beta", "mean", "var", "bias")}
                self._src[e["bn"]]["weight"] = p[e["source_weight"]]  # float32: scaled in float32
            elif e["kind"] == "threshold":
                self._src[e["bn"]] = {k: f64(e[f"source_{k}"]) for k in
                                      ("gamma", "beta", "mean", "var", "scale", "bias")}
                self._layer_out[e["bn"]] = self._float_layer(engine, e)
            else:
                self._src[e["bn"]] = {k: f64(e[k]) for k in ("gamma", "beta", "mean", "var")}
            self._src[e["bn"]]["var_eps"] = self._src[e["bn"]]["var"] + e["eps"]
            self._src[e["bn"]]["pass"] = np.empty((8, len(self._src[e["bn"]]["mean"])))  # see _apply
        for src in self._src.values():
            src["m2"] = src["var"] + np.square(src["mean"])
            c = len(src["mean"])
            src["identity"] = (np.zeros(c), np.zeros(c), np.ones(c), np.ones(c, np.bool_))
        self.skipped = list(plan.get("skipped", []))
        self._reset()

    @staticmethod
    def _float_layer(engine: Engine, e: dict[str, Any]):
        """A function of the binary layer's packed input giving its float output (the BatchNorm's
        input), from the layer that now writes thresholded bits: same weights, the source scale and bias."""
        from edgert.runtime.kernels import kernel_for

        node = next(n for n in engine.artifact.graph.nodes if n.name == e["node"])
        extra = {"out_groups": 1} if hasattr(node, "out_groups") else {}
        node = dataclasses.replace(node, inputs=(e["tap"], e["weight"], e["source_scale"], e["source_bias"]),
                                   output_kind="float", **extra)  # an MST schedule is dropped: same result
        kernel = kernel_for(node)
        args = [engine.artifact.params[k] for k in node.inputs[1:]]
        return lambda bits: kernel(node, [bits, *args], {}), node.reduction

    def _reset(self) -> None:
        self._m1 = {b: s["mean"].copy() for b, s in self._src.items()}
        self._m2 = {b: s["m2"].copy() for b, s in self._src.items()}
        self._apply()

    def _mean_var(self, bn: str) -> tuple[np.ndarray, np.ndarray]:
        """The statistics to apply: running moments with a share ``source_weight`` of the source's."""
        src = self._src[bn]
        return mix_moments(self._m1[bn], self._m2[bn], src["mean"], src["m2"], self.source_weight)

    def _adapt(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray],
               sums: dict[str, list] | None = None) -> None:
        """One update of the running moments. With ``taps`` empty (a batch larger than ``chunk``), the
        moments come from ``sums`` (gathered by the caller's own pass over the chunks: every layer's, or
        in a large step the first layer's) and from forwards with taps one chunk at a time."""
        n = self._samples(x)
        a = 1.0 - (1.0 - self.momentum) ** n
        if self._large(n):
            # a large step: layer by layer, each layer's statistics from a forward through the layers
            # before it already updated (as a training-mode forward computes them); L forwards, L re-folds
            for k, e in enumerate(self.layers):
                if taps:
                    gain = self._update(e, (taps if k == 0 else self.engine.run_with_taps(x)[1])[e["tap"]], a)
                else:
                    gain = self._update_sums(e, (sums if k == 0 and sums else self._gather(x, [e]))[e["bn"]], a)
                if k == 0:
                    self._gain = gain
                self._apply()
            return
        self._fold(x, taps, sums)
        self._settle(n)

    def _fold(self, x: np.ndarray, taps: dict[str, np.ndarray], sums: dict[str, list] | None = None) -> None:
        """Every BatchNorm's moments of batch x into the running moments, from ``taps`` or else from
        ``sums`` or forwards by chunk; the shift test's gain from the first BatchNorm's."""
        a = 1.0 - (1.0 - self.momentum) ** self._samples(x)
        if taps and self._fast is not None:  # the batch-1 step's path: ~1.5 us less per layer than _update
            self._gain = [update_moments(taps[t], m1, m2, a, folded, ok, p)
                          for t, m1, m2, folded, ok, p in self._fast][0]
        elif taps:
            self._gain = [self._update(e, taps[e["tap"]], a) for e in self.layers][0]
        else:
            sums = sums or self._gather(x, self.layers)
            self._gain = [self._update_sums(e, sums[e["bn"]], a) for e in self.layers][0]

    def _settle(self, n: int) -> None:
        """After ``n`` more samples were folded in: re-fold when ``refold_every`` have passed."""
        self._pending += n
        if self._pending >= self.refold_every:
            self._apply()

    def _update(self, e: dict[str, Any], tap: np.ndarray, a: float) -> float:
        """Fold one batch's moments of BatchNorm ``e``'s input into the running moments (in place); return
        the shift test's gain on them."""
        bn = e["bn"]
        return update_moments(self._bn_values(e, tap), self._m1[bn], self._m2[bn], a, e["kind"] == "folded",
                              *self._pass[bn])

    def _add_sums(self, sums: dict[str, list], taps: dict[str, np.ndarray], layers: list[dict[str, Any]]) -> None:
        """Add one chunk's per-channel sums of each of ``layers``' BatchNorm inputs into ``sums``
        (bn -> [sum, sum of squares, values per channel])."""
        for e in layers:
            t = self._bn_values(e, taps[e["tap"]])
            acc = sums.setdefault(e["bn"], [np.zeros(t.shape[1]), np.zeros(t.shape[1]), 0])
            add_sums(t, acc[0], acc[1])
            acc[2] += t.shape[0] * t.shape[2]

    def _gather(self, x: np.ndarray, layers: list[dict[str, Any]]) -> dict[str, list]:
        """The sums of ``layers``' BatchNorm inputs over batch x, from forwards one chunk at a time."""
        sums: dict[str, list] = {}
        for xc in self._chunks(x):
            self._add_sums(sums, self.engine.run_with_taps(xc)[1], layers)
        return sums

    def _update_sums(self, e: dict[str, Any], acc: list, a: float) -> float:
        """``_update`` from gathered sums."""
        bn = e["bn"]
        return update_from_sums(acc[0], acc[1], acc[2], self._m1[bn], self._m2[bn], a, e["kind"] == "folded",
                                *self._pass[bn])

    def _bn_values(self, e: dict[str, Any], tap: np.ndarray) -> np.ndarray:
        """``_bn_tap`` as the moment kernels take it: float32, contiguous, [samples, C, positions]."""
        t = np.ascontiguousarray(self._bn_tap(e, tap), dtype=np.float32)
        return t.reshape(t.shape[0], t.shape[1], -1)

    def _bn_tap(self, e: dict[str, Any], tap: np.ndarray) -> np.ndarray:
        """The tensor whose channel moments ``e`` tracks, [samples, C, ...]: time folds into the batch."""
        if self.engine.stateful:
            tap = tap.reshape((-1,) + tap.shape[2:])
        if e["kind"] == "threshold":
            return self._layer_out[e["bn"]][0](tap)
        if e["kind"] == "fused":  # the BatchNorm's input, from the layer's input and source weight
            src = self._src[e["bn"]]
            return tap.reshape(len(tap), -1) @ src["weight"].T + src["bias"].astype(np.float32)
        return tap

    def _update_ref(self, e: dict[str, Any], tap: np.ndarray, a: float) -> None:
        """NumPy reference of ``_update``."""
        bn = e["bn"]
        t1, t2 = moments_ref(self._bn_tap(e, tap))
        if e["kind"] == "folded":  # the tap holds y = s (x - mean) + beta: invert per channel
            beta, mean, s, ok = self._applied[bn]  # the statistics folded into the weights that ran
            x1 = (t1 - beta) / s + mean
            x2 = np.maximum(t2 - t1 * t1, 0.0) / (s * s) + x1 * x1
            # a zero-scale channel carries no information: keep its stats
            t1, t2 = np.where(ok, x1, self._m1[bn]), np.where(ok, x2, self._m2[bn])
        self._m1[bn] = (1 - a) * self._m1[bn] + a * t1
        self._m2[bn] = (1 - a) * self._m2[bn] + a * t2

    def _apply(self) -> None:
        """Write the current statistics into the engine's parameters (re-folding where folded)."""
        new: dict[str, np.ndarray] = {}
        self._applied, self._pass, self._pending = {}, {}, 0
        self.refolds += 1
        for e in self.layers:
            bn, src = e["bn"], self._src[e["bn"]]
            if e["kind"] == "folded":  # the common case, in one call (the batch-1 step re-folds every 8th)
                w, p = src["weight"], src["pass"]
                w_new, b_new, ok = refold_layer(w.reshape(len(w), -1), src["bias"], *self._affine(bn),
                                                self._m1[bn], self._m2[bn], src["mean"], src["m2"],
                                                self.source_weight, e["eps"], src["var_eps"], p)
                self._applied[bn], self._pass[bn] = (p[0], p[1], p[2], ok), (ok, p)
                new[e["weight"]], new[e["bias"]] = w_new.reshape(w.shape), b_new
                continue
            mean, var = self._mean_var(bn)
            self._applied[bn] = src["identity"]  # no fold to invert
            gamma, beta = (v.astype(np.float64) for v in self._affine(bn))  # copies: the policy may step them
            if e["kind"] == "fused":
                s = (src["gamma"] / np.sqrt(var + e["eps"])).astype(np.float32)
                new[e["weight_t"]] = np.ascontiguousarray((src["weight"] * s[:, None]).T)
                new[e["bias"]] = ((src["bias"] - mean) * s + src["beta"]).astype(np.float32)
            elif e["kind"] == "threshold":
                inv = src["gamma"] / np.sqrt(var + e["eps"])
                new[e["threshold"]], new[e["flip"]] = thresholds(
                    src["scale"] * inv, (src["bias"] - mean) * inv + src["beta"], self._layer_out[bn][1])
            else:
                new[e["mean"]], new[e["var"]] = mean.astype(np.float32), var.astype(np.float32)
                new[e["gamma"]], new[e["beta"]] = gamma.astype(np.float32), beta.astype(np.float32)
            # the statistics the engine runs with until the next _apply, for the shift test
            self._pass[bn] = pass_params(self._applied[bn], src["mean"], src["var_eps"], mean, var + e["eps"],
                                         src["pass"])
        self.engine.set_params(new)
        # update_moments' arguments, when every tap is what the moments are of (no _bn_tap), float32
        specs = self.engine.artifact.manifest["specs"]
        plain = not self.engine.stateful and all(
            e["kind"] in ("folded", "kept") and specs.get(e["tap"], {}).get("dtype") == "float32" for e in self.layers)
        self._fast = [(e["tap"], self._m1[e["bn"]], self._m2[e["bn"]], e["kind"] == "folded", *self._pass[e["bn"]])
                      for e in self.layers] if plain else None

    def _affine(self, bn: str) -> tuple[np.ndarray, np.ndarray]:
        """BatchNorm ``bn``'s scale and shift to apply (the source ones; the entropy policy adapts them)."""
        return self._src[bn]["gamma"], self._src[bn]["beta"]

    def _state(self) -> dict[str, np.ndarray]:
        out = {}
        for bn in self._m1:
            out[f"{bn}.m1"], out[f"{bn}.m2"] = self._m1[bn], self._m2[bn]
        return out

    def _load(self, state: dict[str, np.ndarray]) -> None:
        for bn in self._m1:
            self._m1[bn] = state[f"{bn}.m1"].astype(np.float64)
            self._m2[bn] = state[f"{bn}.m2"].astype(np.float64)
        self._apply()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(momentum=self.momentum, source_weight=self.source_weight, refold_every=self.refold_every,
                   refolds=self.refolds, shift_margin=self.shift_margin, layers=len(self.layers),
                   skipped_layers=self.skipped)
        return out
