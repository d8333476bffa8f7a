"""Shift reset: the source-fit gain against its NumPy reference and hand-computed cases, and the norm
policy resetting to the source when the stream returns to it (and only then)."""

import numpy as np
import pytest

from edgert.runtime.adapt import make_policy
from edgert.runtime.adapt.norm import pass_params, update_moments
from edgert.runtime.adapt.shift import source_gain_ref
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_norm import _model

torch = pytest.importorskip("torch")


def _stats(rng, c):
    return rng.standard_normal(c), rng.random(c) + 0.5


def _gain(x, src, now, fold=None):
    """update_moments' gain on x [N, C, ...]; with ``fold`` (beta, mean, s) the kernel sees
    y = s (x - mean) + beta."""
    c = x.shape[1]
    if fold is None:
        t, folded, fold = x, False, (np.zeros(c), np.zeros(c), np.ones(c))
    else:
        beta, mean, s = fold
        shape = (1, c) + (1,) * (x.ndim - 2)
        t, folded = s.reshape(shape) * (x - mean.reshape(shape)) + beta.reshape(shape), True
    t = np.ascontiguousarray(t, dtype=np.float32)
    m1, m2 = np.zeros(c), np.zeros(c)
    gain = update_moments(t.reshape(t.shape[0], c, -1), m1, m2, 1.0, folded,
                          *pass_params((*fold, np.ones(c, np.bool_)), *src, *now, np.empty((8, c))))
    np.testing.assert_allclose(m1, x.reshape(x.shape[0], c, -1).mean(axis=(0, 2)), rtol=1e-4, atol=1e-5)
    return gain


@pytest.mark.parametrize("shape", [(1, 4, 6, 6), (16, 3, 5, 5), (8, 7)])
def test_gain_matches_reference(shape):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 1.3 + 0.4).astype(np.float32)
    src, now = _stats(rng, shape[1]), _stats(rng, shape[1])
    assert _gain(x, src, now) == pytest.approx(source_gain_ref(x, *src, *now), rel=1e-9, abs=1e-12)
    fold = (rng.standard_normal(shape[1]), rng.standard_normal(shape[1]), rng.random(shape[1]) + 0.5)
    assert _gain(x, src, now, fold) == pytest.approx(source_gain_ref(x, *src, *now), rel=1e-4, abs=1e-5)


def test_gain_hand_computed():
    x = np.array([[[1.0, 3.0]]], np.float32)  # one channel: E[x] = 2, E[x^2] = 5
    src, now = (np.array([2.0]), np.array([1.0])), (np.array([0.0]), np.array([4.0]))
    # LL(src) = -0 - (5 - 8 + 4)/2 = -0.5;  LL(now) = -log(4)/2 - 5/8
    assert _gain(x, src, now) == pytest.approx(-0.5 + 0.5 * np.log(4.0) + 5 / 8)
    assert _gain(x, src, src) == 0.0  # the same statistics: no gain


@pytest.fixture(scope="module")
def artifact():
    import edgert

    return edgert.compile(_model(), np.zeros((1, 1, 6, 6), np.float32))


def _source_like(rng, n):
    return [rng.standard_normal((1, 1, 6, 6)).astype(np.float32) * 0.3 for _ in range(n)]


def test_reset_when_the_stream_returns_to_the_source(artifact):
    rng = np.random.default_rng(0)
    p = make_policy("norm", Engine(artifact))
    for _ in range(100):  # a shifted domain, stationary: adapt to it without resetting
        p.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    assert p.stats()["shift_resets"] == 0
    back = _source_like(rng, 1)[0]
    out = p.run(back)
    st = p.stats()
    assert st["shift_resets"] == 1 and "shift at sample 100" in st["events"][-1]
    fresh = make_policy("norm", Engine(artifact))  # the sample that showed the shift starts from the source
    np.testing.assert_array_equal(out, fresh.run(back))
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(p.state_dict()[k], v, err_msg=k)


def test_no_reset_on_a_stationary_stream_at_batch_1(artifact):
    rng = np.random.default_rng(1)
    p = make_policy("norm", Engine(artifact))
    for x in _source_like(rng, 300):
        p.run(x)
    assert p.stats()["shift_resets"] == 0


def test_shift_reset_can_be_turned_off(artifact):
    rng = np.random.default_rng(0)
    p = make_policy("norm", Engine(artifact), shift_margin=None)
    for _ in range(50):
        p.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    p.run(_source_like(rng, 1)[0])
    assert p.stats()["shift_resets"] == 0


@pytest.mark.parametrize("fold", [True, False])
def test_knn_input_statistics_follow_the_running_rule(fold):
    """knn's running moments of the first BatchNorm's input against the same rule on the torch model's
    BatchNorm input (read with a forward hook), for a folded and a kept BatchNorm."""
    import edgert

    model = _model()
    art = edgert.compile(model, np.zeros((1, 1, 6, 6), np.float32), fold_bn=fold)
    p = make_policy("knn", Engine(art), guard=False)
    seen = []
    hook = model[1].register_forward_hook(lambda m, i, o: seen.append(i[0].double().numpy()))
    bn = model[1]
    m1 = bn.running_mean.double().numpy().copy()
    m2 = bn.running_var.double().numpy() + m1 ** 2
    rng = np.random.default_rng(3)
    for batch in (1, 4, 1, 2):
        x = (rng.standard_normal((batch, 1, 6, 6)) * 1.5 + 0.7).astype(np.float32)
        p.run(x)
        with torch.no_grad():
            model(torch.from_numpy(x))
        a = 1 - 0.95 ** batch
        m1 = (1 - a) * m1 + a * seen[-1].mean(axis=(0, 2, 3))
        m2 = (1 - a) * m2 + a * np.square(seen[-1]).mean(axis=(0, 2, 3))
    hook.remove()
    np.testing.assert_allclose(p._inputs.m1, m1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p._inputs.m2, m2, rtol=1e-4, atol=1e-5)


def test_knn_empties_its_memory_when_the_stream_returns_to_the_source(artifact):
    rng = np.random.default_rng(0)
    p = make_policy("knn", Engine(artifact), confidence=0.0, guard=False)  # every sample stored
    for _ in range(100):
        p.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    assert p.stats()["shift_resets"] == 0 and p.filled == 100
    back = _source_like(rng, 1)[0]
    out = p.run(back)
    assert p.stats()["shift_resets"] == 1 and p.filled == 1  # emptied, then this sample stored
    fresh = make_policy("knn", Engine(artifact), confidence=0.0, guard=False)
    np.testing.assert_array_equal(out, fresh.run(back))
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(p.state_dict()[k], v, err_msg=k)


def test_knn_state_carries_its_shift_statistics(artifact):
    """A knn policy loaded from another's state resets where the original does, and answers alike."""
    rng = np.random.default_rng(5)
    a = make_policy("knn", Engine(artifact), confidence=0.0, guard=False)
    for _ in range(30):
        a.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    b = make_policy("knn", Engine(artifact), confidence=0.0, guard=False)
    b.load_state_dict(a.state_dict())
    for x in _source_like(rng, 3):
        np.testing.assert_array_equal(a.run(x), b.run(x))
    assert a.stats()["shift_resets"] == b.stats()["shift_resets"] == 1
