"""The collapse guard: a policy whose predictions collapse onto one class goes back to a good state."""

import numpy as np
import pytest

from edgert.errors import EdgertError
from edgert.runtime.adapt.base import AdaptingPolicy


class _StubEngine:
    """Returns logits chosen by the test; 'drift' is added to class 0 by the adapted state."""

    stateful = False

    def __init__(self):
        self.next_logits = None

    def run_with_taps(self, x):
        return self.next_logits.copy(), {}


class _Drifting(AdaptingPolicy):
    """Each update pushes class 0 up by one: after a few batches every prediction is class 0."""

    name = "drift"

    def __init__(self, engine, **kw):
        super().__init__(engine, **kw)
        self.drift = np.zeros(1)

    def _predict(self, y, taps):
        y[:, 0] += self.drift[0]
        return y

    def _adapt(self, x, y, taps):
        self.drift = self.drift + 1.0

    def _state(self):
        return {"drift": self.drift}

    def _load(self, state):
        self.drift = state["drift"].copy()

    def _reset(self):
        self.drift = np.zeros(1)


def _batch(engine, rng, n=4):
    engine.next_logits = rng.standard_normal((n, 5)) * 3  # varied classes before the drift
    return np.zeros((n, 1), np.float32)


def test_collapse_resets_to_source_and_says_so():
    rng = np.random.default_rng(0)
    eng = _StubEngine()
    p = _Drifting(eng, window=8, max_share=0.6, snapshot_every=10**6)
    for _ in range(12):
        p.run(_batch(eng, rng))
    s = p.stats()
    assert s["collapses"] >= 1 and "reset to source parameters" in s["events"][0]
    assert p.drift[0] < 12  # it was set back to 0 at least once


def test_collapse_restores_last_good_snapshot_first():
    rng = np.random.default_rng(1)
    eng = _StubEngine()
    p = _Drifting(eng, window=4, max_share=0.9, snapshot_every=4)
    p.run(_batch(eng, rng))            # drift 0 -> 1 after; window full (4 samples): snapshot drift=1
    assert p.stats()["snapshot"]
    snaps = []
    for _ in range(30):
        p.run(_batch(eng, rng))
        if p.collapses:
            break
        snaps.append(p._good["drift"][0])
    assert "restored the last good snapshot" in p.events[0]
    assert p.drift[0] == snaps[-1] < p.updates and not p.stats()["snapshot"]


def test_no_collapse_on_a_healthy_stream():
    rng = np.random.default_rng(2)
    eng = _StubEngine()
    p = _Drifting(eng, window=8)
    p._adapt = lambda x, y, taps: None  # no drift
    for _ in range(20):
        p.run(_batch(eng, rng))
    assert p.collapses == 0 and p.stats()["samples"] == 80


def test_guard_options_are_checked():
    with pytest.raises(EdgertError, match="max_share"):
        _Drifting(_StubEngine(), max_share=0)


def test_window_entropy_is_the_normalized_softmax_entropy():
    rng = np.random.default_rng(3)
    eng = _StubEngine()
    p = _Drifting(eng, window=6)
    p._adapt = lambda x, y, taps: None
    logits = []
    for _ in range(3):  # 12 samples through a window of 6: the last 6 count
        p.run(_batch(eng, rng))
        logits.append(eng.next_logits)
    y = np.concatenate(logits)[-6:]
    q = np.exp(y - y.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    want = (-(q * np.log(q)).sum(1) / np.log(5)).mean()
    assert abs(p.stats()["window_entropy"] - want) < 1e-6  # logits rounded to float32
    assert p.stats()["window_top_class_share"] == np.bincount(y.argmax(1)).max() / 6


@pytest.mark.parametrize("shape", [(1, 2), (5, 10), (3, 1)])
def test_entropy_kernel_matches_reference(shape):
    from edgert.runtime.adapt.base import entropy_argmax, entropy_argmax_ref

    y = (np.random.default_rng(4).standard_normal(shape) * 4).astype(np.float32)
    got, want = entropy_argmax(y), entropy_argmax_ref(y)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got[1], want[1])


class _OneClass(_Drifting):
    """No drift: the stub's logits are answered as they are (the source's answer)."""

    def _adapt(self, x, y, taps):
        pass


def test_default_window_spans_four_batches():
    """One batch of 64 answered with one class (a hard segment) is not a collapse under the default
    window (64 predictions or four batches); a run of them is. An explicit window of 64 judges that one
    batch alone."""
    rng = np.random.default_rng(0)
    eng = _StubEngine()
    one = np.zeros((64, 5))
    one[:, 2] = 5.0
    varied = lambda: rng.standard_normal((64, 5)) * 3  # noqa: E731
    default, explicit = _OneClass(eng, snapshot_every=10**6), _OneClass(eng, window=64, snapshot_every=10**6)
    for logits in (varied(), varied(), varied(), one):
        for p in (default, explicit):
            eng.next_logits = logits
            p.run(np.zeros((64, 1), np.float32))
    assert default.stats()["collapses"] == 0 and explicit.stats()["collapses"] == 1
    for _ in range(3):
        eng.next_logits = one
        default.run(np.zeros((64, 1), np.float32))
    assert default.stats()["collapses"] == 1
    small = _OneClass(eng, snapshot_every=10**6)  # at batch 4 the default window is 64 predictions
    for _ in range(16):
        eng.next_logits = one[:4]
        small.run(np.zeros((4, 1), np.float32))
    assert small.stats()["collapses"] == 1
