"""The ``adapter`` policy (opt-in): train only the compiled-in side blocks on the device, EcoTTA-style.

The method is EcoTTA (Song et al., CVPR 2023: lightweight side "meta networks" on a frozen network,
with a self-distilled regularizer). EcoTTA is reported to be patented by its authors' company
(Qualcomm); for that reason this policy is opt-in: it is never the default, and it only runs on an
artifact compiled with ``edgert compile --adapters``.

The artifact carries a residual side block ``h + a_k``, ``a_k = conv1x1_k(h)``, after each conv block
(compilers/adapters.py), warmed up on source data at compile time. Per batch of B samples with logits
z, p = softmax(z) and entropy H_i = -sum_j p_ij ln p_ij, the loss is

    L = (1/B) sum_i [H_i < margin] H_i  +  lam * sum_k mean(|a_k|)

The first term is entropy of the confident samples only (margin 0.2 ln C by default; EcoTTA and EATA
use 0.4 ln C). The second is EcoTTA's self-distillation: the L1 distance between each adapted block
output h + a_k and the frozen block output h on the same input, which is the side branch's own output
a_k, so no second forward is needed. The gradient, dL/dz = [H < margin] (-p (ln p + H)) / B at the
logits and lam sign(a_k) / size(a_k) at each a_k, goes back through the compiled graph (backprop.py,
NumPy) into the side-block weights and biases only; SGD or Adam updates them, nothing else changes.

Like ``norm``, it resets to the source (the warmed-up side blocks, fresh optimizer state) when the
source statistics fit the first BatchNorm's input better than its running statistics by ``shift_margin``
(edgert.runtime.adapt.shift; the statistics are knn's ``InputStatistics``); without it the side blocks
stay tuned to the stream's last, harshest segment when the stream starts over.

A batch larger than ``chunk`` (default 1; None: the whole batch at once) is stepped ``chunk`` samples
at a time, each chunk's forward with taps and backward, the gradients added up (exact: the loss is a
sum over samples), so the step keeps one chunk's activations whatever the batch.

An artifact compiled with ``--adapt-memory`` trains only the deepest side blocks whose step fits (the
plan's ``blocks``; ``frozen_blocks`` keep their warmed-up weights), and with ``--adapter-rank`` those
are C->r->C bottlenecks. When one bottleneck block is trained (plan ``walk``: "bottleneck") the
backward walks from the logits to that block's output only, and ``bottleneck_grads`` gives its four
gradients from the block's input h and bottleneck values in one pass, recomputing a per pixel for
the L1 term's sign: the step keeps h and the bottleneck, not a, and never holds a's gradient whole.

``stats()["step_memory"]["step_peak"]`` is the measured peak of a step: the activations kept from the
forward (the plan's taps only: others, read by the shift test, are dropped first; each side output
becomes its L1 seed in place and then takes the incoming gradient), plus the optimizer state, plus
the peak of the NumPy allocations of the backward pass and the update (tracemalloc; it includes the
gradients). It is measured on the first step and every ``memory_every`` steps after (tracemalloc
slows the steps it watches); the last measurement is shown.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from edgert.errors import EdgertError
from edgert.runtime.adapt.backprop import Backward
from edgert.runtime.adapt.base import AdaptingPolicy, softmax
from edgert.runtime.adapt.knn import InputStatistics
from edgert.runtime.adapt.memory import nbytes, step_memory, traced_peak
from edgert.runtime.engine import Engine

OPTIMIZERS = ("adam", "sgd")


def entropy_seed(y: np.ndarray, margin: float, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """dL/dlogits of the confident-entropy term (1/B) sum_i [H_i < margin] H_i, and the entropies H
    (B: the rows of y, or ``batch`` when y is a chunk of a batch)."""
    p = softmax(y)
    logp = np.log(np.maximum(p, 1e-300))
    h = -(p * logp).sum(axis=1)
    keep = (h < margin)[:, None]
    return (keep * -p * (logp + h[:, None]) / (batch or len(y))).astype(np.float32), h


def l1_seed(a: np.ndarray, scale: float, overwrite: bool = False) -> np.ndarray:
    """d(scale * sum |a|)/da = scale * sign(a) as float32; with ``overwrite``, written over ``a`` when it
    is a writable float32 array (a tap given up): a batch-1 step then holds no second array of a's size."""
    if not overwrite or a.dtype != np.float32 or not a.flags.writeable:
        return (np.float32(scale) * np.sign(a)).astype(np.float32)
    np.sign(a, out=a)
    a *= np.float32(scale)
    return a


def bottleneck_grads_ref(g: np.ndarray, h: np.ndarray, mid: np.ndarray, w_up: np.ndarray, b_up: np.ndarray,
                        scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a bottleneck side block a = up(down(h)) (1x1 convs: mid = W_d h + b_d, a = W_u mid
    + b_u) for the loss L whose gradient at the block output h + a is ``g``, plus ``scale * sum |a|``:
    (dW_d [r, C], db_d [r], dW_u [C, r], db_u [C]), summed over samples and pixels (NumPy reference).
    h is [N, C, H, W], mid [N, r, H, W]; W_u [C, r]."""
    n, c = h.shape[:2]
    r = mid.shape[1]
    h2, m2 = h.reshape(n, c, -1), mid.reshape(n, r, -1)
    a = np.einsum("cr,nrp->ncp", w_up, m2) + b_up[None, :, None]
    ga = np.broadcast_to(g, h.shape).reshape(n, c, -1) + scale * np.sign(a)
    dmid = np.einsum("cr,ncp->nrp", w_up, ga)
    return (np.einsum("nrp,ncp->rc", dmid, h2), dmid.sum(axis=(0, 2)), np.einsum("ncp,nrp->cr", ga, m2),
            ga.sum(axis=(0, 2)))


@numba.njit(cache=True, nogil=True)
def _bottleneck_grads(g, h, mid, w_up, b_up, scale, dw_d, db_d, dw_u, db_u):
    n, c, p = h.shape
    r = mid.shape[1]
    dmid = np.empty(r, np.float32)
    for s in range(n):
        for q in range(p):
            dmid[:] = 0.0
            for ch in range(c):
                a = b_up[ch]
                for k in range(r):
                    a += w_up[ch, k] * mid[s, k, q]
                ga = g[s, ch, q] + (scale if a > 0 else -scale if a < 0 else 0.0)
                db_u[ch] += ga
                for k in range(r):
                    dw_u[ch, k] += ga * mid[s, k, q]
                    dmid[k] += w_up[ch, k] * ga
            for k in range(r):
                db_d[k] += dmid[k]
                for ch in range(c):
                    dw_d[k, ch] += dmid[k] * h[s, ch, q]


def bottleneck_grads(g: np.ndarray, h: np.ndarray, mid: np.ndarray, w_up: np.ndarray, b_up: np.ndarray,
                     scale: float, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """bottleneck_grads_ref added into ``out`` (float32 dW_d, db_d, dW_u, db_u), in one pass that never
    holds a or its gradient whole: a is recomputed per pixel from mid (r values), so a step needs
    neither the side output as a tap nor a buffer of its size. ``g`` may be a broadcast view."""
    n, c = h.shape[:2]
    _bottleneck_grads(np.broadcast_to(g, h.shape).reshape(n, c, -1), h.reshape(n, c, -1),
                      mid.reshape(n, mid.shape[1], -1), w_up.reshape(c, -1), b_up, np.float32(scale), *out)


def adam_step_ref(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
                  t: int, eps: float = 1e-8) -> np.ndarray:
    """Step ``t`` of Adam with bias-corrected moments, as torch.optim.Adam: m and v in place; returns the
    new parameter values (NumPy reference)."""
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    return p - np.float32(lr) * ((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps))


@numba.njit(cache=True, nogil=True)
def _adam_flat(p, g, m, v, out, lr, b1, b2, c1, c2, eps):
    for i in range(p.size):
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
        out[i] = p[i] - lr * ((m[i] / c1) / (np.sqrt(v[i] / c2) + eps))


def adam_step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
              t: int, eps: float = 1e-8) -> np.ndarray:
    """adam_step_ref in one pass with no temporaries but the result (NumPy's takes five buffers the
    size of the parameter: the largest part of a batch-1 step's memory)."""
    out = np.empty_like(p)
    _adam_flat(p.reshape(-1), np.ascontiguousarray(g, p.dtype).reshape(-1), m.reshape(-1), v.reshape(-1),
               out.reshape(-1), lr, b1, b2, 1 - b1 ** t, 1 - b2 ** t, eps)
    return out


class AdapterPolicy(AdaptingPolicy):
    """Entropy on confident samples + L1 self-distillation, gradient into the side blocks only."""

    name = "adapter"
    _shift_note = "; side blocks reset"

    # defaults chosen on a second digits stream (tools/bench/tta.make_stream seed 1), not the bench's own
    def __init__(self, engine: Engine, lr: float = 1e-4, optimizer: str = "adam", lam: float = 2.0,
                 margin: float = 0.2, betas: tuple[float, float] = (0.9, 0.999), memory_every: int = 32,
                 chunk: int | None = 1, shift_margin: float | None = 0.1, **guard: Any):
        super().__init__(engine, **guard)
        plan = engine.artifact.manifest.get("adapt", {}).get("adapter")
        if plan is None:
            raise EdgertError("the 'adapter' policy trains side blocks that this artifact does not have; "
                              "recompile it with `edgert compile MODEL --adapters --adapter-data SOURCE.npz` "
                              "(or edgert.compile(..., adapters=True)), or use --adapt norm")
        if (optimizer not in OPTIMIZERS or not lr > 0 or lam < 0 or not margin > 0 or memory_every < 1
                or (chunk is not None and chunk < 1)):
            raise EdgertError(f"adapter options: need optimizer in {OPTIMIZERS}, lr > 0, lam >= 0, margin > 0 "
                              f"(a fraction of ln C), memory_every >= 1 and chunk >= 1 (or None); got "
                              f"optimizer={optimizer!r}, lr={lr}, lam={lam}, margin={margin}, "
                              f"memory_every={memory_every}, chunk={chunk}")
        self.plan, self.lr, self.optimizer, self.lam, self.betas = plan, lr, optimizer, lam, betas
        self.chunk = chunk
        self._set_shift_margin(shift_margin)
        self._inputs = InputStatistics(engine) if shift_margin is not None else None
        self.memory_every = memory_every
        self.input = engine.inputs[0][0]
        classes = int(engine.outputs[0][1].shape[-1])
        self.margin = margin * np.log(classes)
        self.sides = [b["side"] for b in plan["blocks"]]
        self.names = list(plan["params"])
        self._src = {k: np.array(engine.artifact.params[k], np.float32) for k in self.names}
        # the backward walk is planned once: seeds at the logits and at each side output
        # one bottleneck block (plan walk "bottleneck"): the walk ends at its output, bottleneck_grads does
        # the rest; otherwise seeds at the logits and the side outputs, the walk to the parameters
        self._bottleneck = plan.get("walk") == "bottleneck"
        if self._bottleneck:
            self._backward = Backward(engine.artifact.graph, [plan["logits"]], [plan["blocks"][0]["output"]])
        else:
            self._backward = Backward(engine.artifact.graph, [plan["logits"], *self.sides], self.names)
        self._used = set(plan["taps"])  # what the step keeps of a forward's taps: the backward's values, the sides
        self._read = set(self._backward.needed)
        self.step_memory: dict[str, int] | None = None
        self.confident = 0
        self._reset()

    def _reset(self) -> None:
        self.params = {k: v.copy() for k, v in self._src.items()}
        adam = self.optimizer == "adam"
        self._m = {k: np.zeros_like(v) for k, v in self._src.items()} if adam else {}
        self._v = {k: np.zeros_like(v) for k, v in self._src.items()} if adam else {}
        self._t = 0
        if self._inputs is not None and self._inputs.available:
            self._inputs.reset()
        self.engine.set_params(self.params)

    def _adapt(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray]) -> None:
        if self._t % self.memory_every:
            self._step(x, y, taps)
            return
        (gradients, kept), transient = traced_peak(lambda: self._step(x, y, taps))
        optimizer = nbytes((*self._m.values(), *self._v.values()))
        self.step_memory = step_memory(len(x), kept, optimizer, gradients, transient)

    def _step(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray]) -> tuple[int, int]:
        """One update of the side-block parameters from one batch (see the module docstring), from its
        taps or (``taps`` empty) from forwards of ``chunk`` samples at a time whose gradients add up;
        returns the bytes of the gradients and of the values kept for the backward."""
        out, n = self.plan["logits"], len(x)
        grads: dict[str, np.ndarray] = {}
        kept = 0
        gain = 0.0
        for xc in self._chunks(x) if not taps else [x]:
            yc, tc = (y, taps) if taps else self.engine.run_with_taps(xc)
            if self._inputs is not None and self._inputs.available:  # the batch's gain: chunks weighted by size
                gain += self._inputs.update(tc, len(xc)) * len(xc) / n
            for name in [t for t in tc if t not in self._used]:
                del tc[name]  # read (norm's and the shift test's taps): only what the backward needs stays
            kept = max(kept, nbytes(tc.values()))
            seed, h = entropy_seed(yc, self.margin, n)
            self.confident += int((h < self.margin).sum())
            if self._bottleneck:
                self._bottleneck_step(tc, xc, yc, seed, n, grads)
                continue
            seeds = {out: seed}
            for s in self.sides:  # lam * mean |a| over the batch: a chunk holds len(xc) of its n samples
                a = tc[s] if s in self._read else tc.pop(s)  # given up to be the seed unless a rule reads it
                seeds[s] = l1_seed(a, self.lam * len(xc) / (n * a.size), s not in self._read)

            def add(k: str, g: np.ndarray) -> None:
                """Into the batch's gradient as soon as this chunk's is complete (not both held whole)."""
                if k in grads:
                    grads[k] += g
                else:
                    grads[k] = np.array(g, np.float32)

            self._backward({**tc, self.input: xc, out: yc}, seeds, self.engine.artifact.params, reduce=add,
                           into_seeds=True)
            del seeds, tc
        if not taps:
            kept += y.nbytes  # the batch's logits
        self._gain = gain
        self._t += 1
        b1, b2 = self.betas
        grad_bytes = nbytes(grads.values())
        for k in self.names:
            g = grads.pop(k)  # freed once applied
            if self.optimizer == "adam":
                self.params[k] = adam_step(self.params[k], g, self._m[k], self._v[k], self.lr, b1, b2, self._t)
            else:
                self.params[k] = self.params[k] - np.float32(self.lr) * g
            del g
        self.engine.set_params(self.params)
        return grad_bytes, kept

    def _bottleneck_step(self, tc: dict[str, np.ndarray], xc: np.ndarray, yc: np.ndarray, seed: np.ndarray,
                         n: int, grads: dict[str, np.ndarray]) -> None:
        """One chunk's gradients for a single bottleneck block, added into ``grads``."""
        block, params = self.plan["blocks"][0], self.engine.artifact.params
        w_up, b_up = block["params"][2:]
        if not grads:
            grads.update((k, np.zeros(params[k].shape, np.float32)) for k in self.names)
        h, mid = tc[block["after"]], tc[block["mid"]]
        scale = self.lam * len(xc) / (n * h.size)  # lam * mean |a| over the batch; a has h's shape

        def at_output(name: str, g: np.ndarray) -> None:
            bottleneck_grads(g, h, mid, params[w_up], params[b_up], scale,
                             tuple(grads[k].reshape(grads[k].shape[:2]) if grads[k].ndim == 4 else grads[k]
                                   for k in block["params"]))

        self._backward({**tc, self.input: xc, self.plan["logits"]: yc}, {self.plan["logits"]: seed}, params,
                       reduce=at_output)

    def _state(self) -> dict[str, np.ndarray]:
        out = dict(self.params)
        out.update({f"opt.m.{k}": v for k, v in self._m.items()})
        out.update({f"opt.v.{k}": v for k, v in self._v.items()})
        out["opt.t"] = np.array(self._t)
        if self._inputs is not None:
            out.update(self._inputs.state())
        return out

    def _load(self, state: dict[str, np.ndarray]) -> None:
        self.params = {k: state[k].astype(np.float32, copy=True) for k in self.names}
        self._m = {k: state[f"opt.m.{k}"].astype(np.float32, copy=True) for k in self._m}
        self._v = {k: state[f"opt.v.{k}"].astype(np.float32, copy=True) for k in self._v}
        self._t = int(state["opt.t"])
        if self._inputs is not None:
            self._inputs.load(state)
        self.engine.set_params(self.params)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(blocks=len(self.sides), optimizer=self.optimizer, lr=self.lr, lam=self.lam,
                   shift_margin=self.shift_margin,
                   confident_samples=self.confident, step_memory=self.step_memory,
                   adapter_params=int(sum(v.size for v in self.params.values())))
        return out
