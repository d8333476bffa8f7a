"""The knn policy against a plain NumPy re-implementation of its rule (one sample at a time)."""

import numpy as np
import pytest

from edgert.errors import EdgertError
from edgert.runtime.adapt import make_policy
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_norm import _stream, artifacts  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")


def _knn_ref(logits, feats, capacity, k, tau, weight, confidence):
    """Loop-by-loop: predict each batch from the memory, then store its confident samples, FIFO."""
    mem_f, mem_q, outs = [], [], []
    for y, f in zip(logits, feats):
        p = np.exp(y - y.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        out = p.copy()
        if len(mem_f) >= k:
            for i in range(len(y)):
                sims = np.array([fi @ mf for fi, mf in [(f[i], m) for m in mem_f]])
                top = np.argsort(-sims, kind="stable")[:k]
                w = np.exp((sims[top] - sims[top].max()) / tau)
                vote = sum(wj * mem_q[j] for wj, j in zip(w, top)) / w.sum()
                out[i] = (1 - weight) * p[i] + weight * vote
        outs.append(np.log(out))
        for i in range(len(y)):
            if p[i].max() >= confidence:
                mem_f.append(f[i])
                mem_q.append(p[i])
                if len(mem_f) > capacity:
                    mem_f.pop(0)
                    mem_q.pop(0)
    return outs


@pytest.mark.parametrize("batch", [1, 3])
def test_knn_matches_reference(artifacts, batch):  # noqa: F811
    art = artifacts[True]
    xs = _stream(batch, 12)
    eng = Engine(art)
    tap = art.manifest["adapt"]["features"]
    logits, feats = zip(*[(y, t[tap]) for y, t in (eng.run_with_taps(x) for x in xs)])
    e = [np.exp(y - y.max(1, keepdims=True)) for y in logits]
    top = np.concatenate([v / v.sum(1, keepdims=True) for v in e]).max(1)
    opts = dict(capacity=5, k=3, tau=0.2, weight=0.6, confidence=float(np.median(top)))  # half are stored
    policy = make_policy("knn", Engine(art), guard=False, **opts)
    ref = _knn_ref(logits, feats, **opts)
    got = [policy.run(x) for x in xs]
    assert policy.stats()["memory"] == 5
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    state = policy.state_dict()
    policy.reset()
    assert policy.stats()["memory"] == 0
    policy.load_state_dict(state)
    assert policy.stats()["memory"] == 5


def test_knn_options_checked(artifacts):  # noqa: F811
    with pytest.raises(EdgertError, match="capacity >= k"):
        make_policy("knn", Engine(artifacts[True]), capacity=2, k=3)
