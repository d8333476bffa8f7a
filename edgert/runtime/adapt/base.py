"""What every adapting policy shares: the collapse guard, snapshots, and state checks.

A policy subclasses ``AdaptingPolicy`` and implements ``_adapt(x, y, taps)`` (one update from a batch,
given the outputs and the taps the Engine returned), ``_state()`` / ``_load(state)`` (its adapted
arrays) and ``_reset()``. ``run`` then does inference, the update and the guard.

The collapse guard watches the last ``window`` predictions (by default 64, or the last four batches when
those hold more: a window of one large batch judges the batch, not the policy, and a segment of one
hard corruption can make even the source model answer one class). Collapse is declared when one class takes
more than ``max_share`` of them, or when their mean prediction entropy (normalized by ln C) falls
below ``min_entropy``; the policy then restores the last good snapshot (taken every
``snapshot_every`` samples while healthy), or the source parameters when there is none or that
snapshot collapsed again, and says so in ``stats()``.

After each update ``_shifted()`` may ask for a reset to the source (the shift reset,
edgert.runtime.adapt.shift): the batch is then answered and adapted on again from the source.

A stateful (spiking) engine takes inputs [T, batch, ...]: a sample is a whole sequence, and the
prediction the guard watches (and ``_predict`` reads) is the output summed over time, the spike
counts [batch, classes]; taps are [T, batch, ...]. ``run`` returns the engine's output [T, batch, C]
unchanged unless the policy replaces the prediction (``replaces_output``, knn), then that [batch, C].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numba
import numpy as np

from edgert.errors import EdgertError, InputError
from edgert.runtime.engine import Engine


def softmax(y: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = y.astype(np.float64) - y.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def entropy_argmax_ref(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: softmax entropy normalized by ln C (0 = one-hot, 1 = uniform), and the argmax."""
    z = y.astype(np.float64) - y.max(axis=1, keepdims=True)  # H = logsumexp(z) - sum(p z)
    e = np.exp(z)
    tot = e.sum(axis=1)
    return (np.log(tot) - (e * z).sum(axis=1) / tot) / np.log(max(y.shape[1], 2)), y.argmax(axis=1)


@numba.njit(cache=True, nogil=True)
def entropy_argmax(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """entropy_argmax_ref in one pass per row (the guard runs on every step)."""
    b, c = y.shape
    ent, arg = np.empty(b), np.empty(b, np.int64)
    for i in range(b):
        m, k = y[i, 0], 0
        for j in range(1, c):
            if y[i, j] > m:
                m, k = y[i, j], j
        tot = ez = 0.0
        for j in range(c):
            z = np.float64(y[i, j]) - m
            e = np.exp(z)
            tot += e
            ez += e * z
        ent[i] = (np.log(tot) - ez / tot) / np.log(max(c, 2))
        arg[i] = k
    return ent, arg


@numba.njit(cache=True, nogil=True)
def push_window(y: np.ndarray, preds: np.ndarray, ents: np.ndarray, pos: int) -> tuple[int, float, float]:
    """Write the argmax and normalized entropy of each row of y into the ring buffers preds/ents at
    ``pos`` (only the last len(preds) rows when y has more); return the next position, the share of
    the most frequent class in the window and the window's mean entropy (whole buffers)."""
    ent, arg = entropy_argmax(y)
    w, n = len(preds), len(y)
    for i in range(max(0, n - w), n):
        j = (pos + i) % w
        preds[j], ents[j] = arg[i], ent[i]
    return (pos + n) % w, np.bincount(preds).max() / w, ents.mean()


def check_state(state: dict[str, np.ndarray], expected: dict[str, np.ndarray], policy: str) -> None:
    """Raise one InputError naming every missing, unknown or misshapen array of a policy state."""
    problems = [f"missing {k!r}" for k in expected if k not in state]
    problems += [f"unknown {k!r}" for k in state if k not in expected]
    problems += [f"{k!r} is {np.shape(state[k])}, expected {v.shape}" for k, v in expected.items()
                 if k in state and np.shape(state[k]) != v.shape]
    if problems:
        raise InputError(f"state for the {policy!r} policy does not fit this artifact: "
                         f"{'; '.join(problems)}; save it from a policy on the same artifact")


class AdaptingPolicy:
    """Inference + one unsupervised update per batch, with a collapse guard and snapshots."""

    name = "?"
    rerun_from: int | None = None  # batches at least this large are answered after their own update
    replaces_output = False  # _predict changes the answer: a spiking model's run returns it, [batch, C]
    chunk: int | None = None  # a larger batch runs without taps; _adapt gets {} and fetches them by chunk
    shift_margin: float | None = None  # no shift test unless a policy sets one (see _shifted)
    _gain = 0.0
    _shift_note = ""

    def __init__(self, engine: Engine, guard: bool = True, window: int | None = None, max_share: float = 0.6,
                 min_entropy: float = 0.02, snapshot_every: int = 256):
        if not 0 < max_share <= 1 or (window is not None and window < 1) or snapshot_every < 1:
            raise EdgertError("guard options: need window >= 1 (or None), 0 < max_share <= 1, snapshot_every >= 1")
        self.engine = engine
        self.guard, self.window, self.max_share = guard, window, max_share
        self.min_entropy, self.snapshot_every = min_entropy, snapshot_every
        self._preds = np.zeros(window or 64, np.int64)  # ring buffers of the last predictions (the window)
        self._ents = np.zeros(window or 64)
        self._filled = self._pos = 0
        self._good: dict[str, np.ndarray] | None = None
        self._since_snapshot = 0
        self.samples = self.updates = self.collapses = self.shift_resets = 0
        self.events: list[str] = []

    # -- what a policy implements -------------------------------------------------------------
    def _adapt(self, x: np.ndarray, y: np.ndarray, taps: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _shifted(self) -> str | None:
        """After ``_adapt``: why the batch calls for a reset to the source, or None. A policy with a shift
        test (edgert.runtime.adapt.shift) sets ``shift_margin`` (``_set_shift_margin``) and leaves each
        batch's gain in ``_gain``; ``_shift_note`` says what else its reset does."""
        if self.shift_margin is None or self._gain <= self.shift_margin:
            return None
        return f"the source statistics fit the input better by {self._gain:.3f} nats per value{self._shift_note}"

    def _set_shift_margin(self, margin: float | None) -> None:
        if margin is not None and not margin >= 0:
            raise EdgertError(f"{self.name} policy: shift_margin={margin} must be >= 0 (or None: no shift reset)")
        self.shift_margin, self._gain = margin, 0.0

    def _predict(self, y: np.ndarray, taps: dict[str, np.ndarray]) -> np.ndarray:
        """The prediction from outputs y [batch, C] (a spiking model's spike counts)."""
        return y

    def _samples(self, x: np.ndarray) -> int:
        """Samples in batch x: its first axis, or its second for a spiking model ([T, batch, ...])."""
        return x.shape[1] if self.engine.stateful else len(x)

    def _large(self, n: int) -> bool:
        """Whether a batch of n samples is answered after its own update (``rerun_from``)."""
        return self.rerun_from is not None and n >= self.rerun_from

    def _chunks(self, x: np.ndarray):
        """Batch x in runs of ``chunk`` samples (views)."""
        n, c = self._samples(x), self.chunk or self._samples(x)
        for i in range(0, n, c):
            yield x[:, i:i + c] if self.engine.stateful else x[i:i + c]

    def _forward(self, x: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
        """Outputs and taps of batch x; no taps (so no batch-sized activations kept) for a batch larger
        than ``chunk``."""
        if self.chunk is not None and self._samples(x) > self.chunk:
            return self.engine.run(x), {}
        return self.engine.run_with_taps(x)

    # -- the fixed interface ------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        y, taps = self._forward(x)
        if isinstance(y, list):
            raise EdgertError(f"the {self.name!r} policy adapts single-output classifiers")
        readout = (lambda v: v.sum(axis=0)) if self.engine.stateful else (lambda v: v)  # noqa: E731
        out = self._predict(readout(y), taps)
        self._adapt(x, y, taps)
        why = self._shifted()
        if why is not None:  # answered and adapted on again from the source: this batch starts the new domain
            self.shift_resets += 1
            self._restart(f"shift at sample {self.samples}: {why}; reset to source parameters")
            y, taps = self._forward(x)
            out = self._predict(readout(y), taps)
            self._adapt(x, y, taps)
        n = self._samples(x)
        if self._large(n):
            y = self.engine.run(x)  # answer with the state adapted to this batch
            out = self._predict(readout(y), taps)
        self.samples += n
        self.updates += 1
        if self.guard and out.ndim == 2:
            self._watch(out)
        return y if self.engine.stateful and not self.replaces_output else out

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self._state().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, self._state(), self.name)
        self._load({k: np.asarray(v) for k, v in state.items()})

    def reset(self) -> None:
        self._reset()
        self._filled = self._pos = 0

    def stats(self) -> dict[str, Any]:
        n = self._filled
        share = np.bincount(self._preds[:n]).max() / n if n else None
        return {"policy": self.name, "samples": self.samples, "updates": self.updates,
                "collapses": self.collapses, "shift_resets": self.shift_resets, "events": self.events[-10:],
                "snapshot": self._good is not None,
                "window_top_class_share": None if share is None else float(share),
                "window_entropy": float(np.mean(self._ents[:n])) if n else None}

    # -- guard --------------------------------------------------------------------------------
    def _watch(self, y: np.ndarray) -> None:
        if self.window is None and len(self._preds) < 4 * len(y):  # the default window: four batches
            self._preds, self._ents = np.zeros(4 * len(y), np.int64), np.zeros(4 * len(y))
            self._filled = self._pos = 0
        self._pos, share, mean_ent = push_window(np.ascontiguousarray(y, dtype=np.float32), self._preds,
                                                 self._ents, self._pos)
        self._filled = min(len(self._preds), self._filled + len(y))
        self._since_snapshot += len(y)
        if self._filled < len(self._preds):
            return
        if share > self.max_share or mean_ent < self.min_entropy:
            self.collapses += 1
            why = (f"top class share {share:.2f} > {self.max_share}" if share > self.max_share
                   else f"mean entropy {mean_ent:.3f} < {self.min_entropy}")
            if self._good is not None:
                self._load(self._good)
                self._good = None  # if it collapses again, go back to the source
                self.events.append(f"collapse at sample {self.samples}: {why}; restored the last good snapshot")
                self._filled = self._pos = self._since_snapshot = 0
            else:
                self._restart(f"collapse at sample {self.samples}: {why}; reset to source parameters")
        elif self._since_snapshot >= self.snapshot_every:
            self._good = self.state_dict()
            self._since_snapshot = 0

    def _restart(self, event: str) -> None:
        """Back to the source parameters with the guard's window and snapshot cleared (a fresh start)."""
        self._reset()
        self._filled = self._pos = self._since_snapshot = 0
        self._good = None
        self.events.append(event)


def save_state(policy: Any, path: str | Path) -> Path:
    """Write a policy's adapted state as an .npz (no pickle)."""
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **policy.state_dict())
    return path


def load_state(policy: Any, path: str | Path) -> None:
    """Load an .npz written by save_state into ``policy`` (shapes are checked)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read adaptation state {path}: {e}; give an .npz from save_state") from None
    policy.load_state_dict(state)
