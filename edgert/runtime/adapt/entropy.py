"""The ``entropy`` policy: entropy minimization on BatchNorm scale and shift, with a confidence filter.

Per batch, each output's softmax entropy H_i, normalized by ln C, is computed; only samples with
H_i / ln C < ``threshold`` count (unconfident samples give noisy gradients: EATA and SAR filter the
same way), and the loss is their mean entropy. The gradient dL/dlogits = -p (log p + H) / kept is
carried back over the compiled graph by backprop.py to each adapted BatchNorm's output y = gamma xhat
+ beta, giving dL/dbeta = sum dL/dy and dL/dgamma = sum dL/dy xhat over batch and positions (xhat from
the tap: (y - beta) / gamma where folded, (x - mean) / sqrt(var + eps) where kept). Adam, as in TENT,
updates gamma and beta; after each update every adapted value is pulled back towards its source value
by a share 1 - (1 - ``anchor``)^batch of the difference (a per-sample decay to the source, as L2-SP
regularizes fine-tuning), which stops the slow creep of entropy minimization on a long stream. The
default lr (1e-4) was chosen on the tta bench stream (1e-4 to 1e-2 at batch 1 and 16, 4 repeats): from
1e-3 up the error creeps up over the repeats; even at 2e-5 it crept without the anchor (a second
stream, seed 1: 301 -> 305 wrong at batch 1), and ``anchor`` 1e-3 was chosen on that stream
(1e-3 and 3e-3 equal; ten repeats flat from the second on).

Statistics are NormPolicy's running moments, never the batch's (so batch size 1 is safe; TENT's
training-mode BatchNorm is not, and tvm.relax.training silently switches eval BatchNorm to batch
statistics, one reason this gradient is hand-derived); a folded BatchNorm is re-folded with the
adapted gamma and beta after each update. Which BatchNorms adapt is the compiler's choice
(compilers/adapt_memory.py: all, or the deepest that fit ``--adapt-memory``).

A batch larger than ``chunk`` (default: the ``--adapt-batch`` the compiler planned the step's memory
at, 1 unless given) is stepped ``chunk`` samples at a time: each chunk's forward with taps, its
backward, and the sums of gradients and of the statistics' moments added up, so the step keeps one
chunk's values whatever the batch (exact: the BatchNorms run on running statistics, so samples do not
interact). A single forward's taps are read by the statistics update first; the backward keeps only
the ones it reads. The step's peak memory (memory.py) is measured on the first two steps at each batch
size; the second (without one-time costs) is reported.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from edgert.errors import EdgertError
from edgert.runtime.adapt.backprop import Backward
from edgert.runtime.adapt.base import entropy_argmax, softmax
from edgert.runtime.adapt.memory import nbytes, step_memory, traced_peak
from edgert.runtime.adapt.norm import NormPolicy
from edgert.runtime.engine import Engine


def entropy_seed(y: np.ndarray, keep: np.ndarray, kept: int | None = None) -> np.ndarray:
    """dL/dlogits of L = (sum over kept rows of the softmax entropy) / ``kept`` (default: the rows kept
    here; a chunk of a batch passes the batch's count), as float32."""
    p = softmax(y)
    logp = np.log(np.maximum(p, 1e-300))
    h = -(p * logp).sum(axis=1, keepdims=True)
    return (-p * (logp + h) * (keep / max(keep.sum() if kept is None else kept, 1))[:, None]).astype(np.float32)


def channel_sums_ref(g: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (axis 1): sum of g * t and sum of g over every other axis, in float64 (NumPy reference)."""
    g64, t64 = g.astype(np.float64), t.astype(np.float64)
    axes = (0,) + tuple(range(2, g.ndim))
    return (g64 * t64).sum(axis=axes), g64.sum(axis=axes)


@numba.njit(cache=True, nogil=True)
def _channel_sums3(g: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, c, size = g.shape
    dot, tot = np.zeros(c), np.zeros(c)
    for i in range(n):
        for j in range(c):
            a = b = 0.0
            for k in range(size):
                v = np.float64(g[i, j, k])
                a += v * np.float64(t[i, j, k])
                b += v
            dot[j] += a
            tot[j] += b
    return dot, tot


def channel_sums(g: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """channel_sums_ref without temporaries (NumPy's float64 sum of a float32 array copies it whole)."""
    return _channel_sums3(g.reshape(g.shape[0], g.shape[1], -1), t.reshape(t.shape[0], t.shape[1], -1))


class EntropyPolicy(NormPolicy):
    """Running BatchNorm statistics, plus Adam on the scale and shift of the planned BatchNorms."""

    name = "entropy"

    def __init__(self, engine: Engine, lr: float = 1e-4, threshold: float = 0.4,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum: float = 0.05,
                 refold_every: int = 1, rerun_from: int | None = 16, anchor: float = 1e-3,
                 chunk: int | None = None, **guard: Any):
        plan = engine.artifact.manifest.get("adapt", {}).get("entropy")
        if plan is None:
            raise EdgertError("the 'entropy' policy found no entropy plan in this artifact: it needs a "
                              "single-output model with BatchNorm compiled by an edgert with adaptation "
                              "support; recompile it, or use --adapt norm")
        if not (lr > 0 and 0 < threshold <= 1 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1 and eps > 0
                and 0 <= anchor <= 1 and (chunk is None or chunk >= 1)):
            raise EdgertError(f"entropy policy: need lr > 0, 0 < threshold <= 1, 0 <= betas < 1, eps > 0, "
                              f"0 <= anchor <= 1, chunk >= 1; got lr={lr}, threshold={threshold}, betas={betas}, "
                              f"eps={eps}, anchor={anchor}, chunk={chunk}")
        self.lr, self.threshold, self.betas, self.eps, self.anchor = lr, threshold, tuple(betas), eps, anchor
        self.plan, self.adapted = plan, list(plan["layers"])
        self.chunk = int(plan["batch"]) if chunk is None else chunk  # the batch the compiler planned the step at
        self._outputs = dict(zip(plan["layers"], plan["outputs"]))
        super().__init__(engine, momentum=momentum, refold_every=refold_every, rerun_from=rerun_from, **guard)
        self._entries = {e["bn"]: e for e in self.layers}
        self._logits, self._input = engine.outputs[0][0], engine.inputs[0][0]
        self._backward = Backward(engine.artifact.graph, [self._logits], plan["outputs"])
        self.filtered = 0  # samples left out by the confidence filter
        self.memory: dict[int, dict[str, int]] = {}  # batch size -> measured step memory
        self._measured: dict[int, int] = {}  # batch size -> steps measured

    # -- state ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        f32 = lambda a: np.array(a, np.float32)  # noqa: E731
        self._gamma = {bn: f32(self._src[bn]["gamma"]) for bn in self.adapted}
        self._beta = {bn: f32(self._src[bn]["beta"]) for bn in self.adapted}
        self._adam = {f"{bn}.{p}.adam_{k}": np.zeros(len(self._gamma[bn]), np.float32)
                      for bn in self.adapted for p in ("gamma", "beta") for k in ("m", "v")}
        self._t = 0
        super()._reset()

    def _affine(self, bn: str) -> tuple[np.ndarray, np.ndarray]:
        return (self._gamma[bn], self._beta[bn]) if bn in self._gamma else super()._affine(bn)

    def _apply(self) -> None:
        super()._apply()
        # what the engine now runs with: the gradient of the next forward is taken at these
        self._ran = {bn: (self._gamma[bn].astype(np.float64), self._beta[bn].astype(np.float64))
                     + self._mean_var(bn) for bn in self.adapted}

    def _state(self) -> dict[str, np.ndarray]:
        out = super()._state()
        for bn in self.adapted:
            out[f"{bn}.gamma"], out[f"{bn}.beta"] = self._gamma[bn], self._beta[bn]
        out.update(self._adam)
        out["adam_t"] = np.array(self._t)
        return out

    def _load(self, state: dict[str, np.ndarray]) -> None:
        for bn in self.adapted:
            self._gamma[bn] = state[f"{bn}.gamma"].astype(np.float32, copy=True)
            self._beta[bn] = state[f"{bn}.beta"].astype(np.float32, copy=True)
        self._adam = {k: state[k].astype(np.float32, copy=True) for k in self._adam}
        self._t = int(state["adam_t"])
        super()._load(state)  # re-folds

    # -- the step ------------------------------------------------------------------------------
    def _adapt(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray]) -> None:
        ent, _ = entropy_argmax(np.ascontiguousarray(y, dtype=np.float32))
        keep = ent < self.threshold
        self.filtered += int((~keep).sum())
        if not keep.any():
            super()._adapt(x, y, taps)
            return
        big = self._large(len(x))
        # one forward's taps at a small step: the statistics update reads them all first, and only what
        # the backward needs is kept through it; otherwise the step's own pass gathers the moment sums
        # (every layer's; the first's in a large step, which re-runs for the later layers)
        single = bool(taps) and not big
        if single:
            self._fold(x, taps)
        gather = [] if single else self.layers[:1] if big else self.layers
        n = self._measured.get(len(x), 0)
        if n >= 2:
            sums = self._step(x, y, taps, keep, gather)[3]
        else:  # the second step at a batch size is the one reported (the first pays one-time costs)
            (*parts, sums), transient = traced_peak(lambda: self._step(x, y, taps, keep, gather))
            self.memory[len(x)] = step_memory(len(x), *parts, transient)
            self._measured[len(x)] = n + 1
        if single:
            self._settle(len(x))  # the re-fold, with the new gamma/beta
        else:
            super()._adapt(x, y, {}, sums)  # running statistics, then the re-fold with the new gamma/beta

    def _step(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray], keep: np.ndarray,
              gather: list[dict[str, Any]]) -> tuple[int, int, int, dict[str, list]]:
        """One Adam step on the adapted gammas and betas, from the batch's taps or (``taps`` empty) from
        forwards of ``chunk`` samples at a time; taps the backward does not read are dropped from the
        dict as soon as they are read. Also gathers the moment sums of the ``gather`` layers. Returns
        (kept, optimizer, gradient) bytes and the sums."""
        used = set(self._backward.needed) | {self._entries[bn]["tap"] for bn in self.adapted} | {self._logits}
        by_output = {self._outputs[bn]: self._entries[bn] for bn in self.adapted}
        count = int(keep.sum())
        sums: dict[str, list] = {}
        acc: dict[str, list[np.ndarray]] = {}
        kept = seed_bytes = 0
        for k, xc in enumerate(self._chunks(x) if not taps else [x]):
            if taps:
                yc, tc, kc = y, taps, keep
            else:
                yc, tc = self.engine.run_with_taps(xc)
                kc = keep[k * self.chunk:k * self.chunk + len(xc)]
            self._add_sums(sums, tc, gather)
            for name in [t for t in tc if t not in used]:
                del tc[name]  # read: only what the backward needs stays for it
            if not kc.any():
                continue
            seed = entropy_seed(yc, kc, count)
            seed_bytes = seed.nbytes
            values = {**tc, self._input: xc, self._logits: yc}
            kept = max(kept, nbytes(values[n] for n in used))

            def sums_of(name: str, gy: np.ndarray, tc=tc) -> tuple[np.ndarray, np.ndarray]:
                """Per channel: sum of dL/dy * tap, and sum of dL/dy (all the update needs of dL/dy)."""
                return channel_sums(gy, tc[by_output[name]["tap"]])

            for name, part in self._backward(values, {self._logits: seed}, self.engine.artifact.params,
                                             reduce=sums_of).items():
                if name in acc:
                    acc[name][0] += part[0]
                    acc[name][1] += part[1]
                else:
                    acc[name] = list(part)
        if not taps:
            kept += y.nbytes  # the batch's logits
        self._t += 1
        b1, b2 = self.betas
        step = self.lr / (1 - b1 ** self._t)
        root_c2 = np.sqrt(1 - b2 ** self._t)
        param_grads = []
        for bn in self.adapted:
            e, (dot, g_beta) = self._entries[bn], acc[self._outputs[bn]]
            gamma, beta, mean, var = self._ran[bn]
            if e["kind"] == "folded":  # the tap is y: xhat = (y - beta) / gamma
                ok = np.abs(gamma) > 1e-12
                g_gamma = np.where(ok, (dot - beta * g_beta) / np.where(ok, gamma, 1.0), 0.0)
            else:  # the tap is x: xhat = (x - mean) / sqrt(var + eps)
                g_gamma = (dot - mean * g_beta) / np.sqrt(var + e["eps"])
            for name, p, g in ((f"{bn}.gamma", self._gamma[bn], g_gamma), (f"{bn}.beta", self._beta[bn], g_beta)):
                g = g.astype(np.float32)
                m, v = self._adam[f"{name}.adam_m"], self._adam[f"{name}.adam_v"]
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= (step * m / (np.sqrt(v) / root_c2 + self.eps)).astype(np.float32)
                if self.anchor:  # pulled back towards the source by a share per sample: no slow creep
                    src = self._src[bn]["gamma" if name.endswith("gamma") else "beta"]
                    p -= (1 - (1 - self.anchor) ** len(x)) * (p - src.astype(np.float32))
                param_grads.append(g)
        return kept, nbytes(self._adam.values()), nbytes(param_grads) + seed_bytes, sums

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        peak = max(self.memory.values(), key=lambda m: m["batch"]) if self.memory else None
        out.update(lr=self.lr, threshold=self.threshold, filtered=self.filtered,
                   adapted_layers=self.adapted, adam_steps=self._t,
                   step_peak_bytes=None if peak is None else peak["step_peak"],
                   step_memory={str(b): m for b, m in sorted(self.memory.items())},
                   planned_step_peak_bytes=self.plan["estimate_bytes"]["step_peak"],
                   planned_batch=self.plan["batch"], budget_bytes=self.plan["budget_bytes"])
        return out
