"""The norm policy against a torch model whose BatchNorm statistics follow the same running-moment rule."""

import numpy as np
import pytest

from edgert.errors import EdgertError, InputError
from edgert.runtime.adapt import POLICIES, make_policy
from edgert.runtime.adapt.base import load_state, save_state
from edgert.runtime.engine import Engine

torch = pytest.importorskip("torch")
nn = torch.nn


def _model() -> "nn.Module":
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                      nn.Linear(6 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5))
    g = torch.Generator().manual_seed(1)
    for bn in (m[1], m[4], m[8]):
        c = bn.num_features
        bn.weight.data = torch.rand(c, generator=g) + 0.5
        bn.bias.data = torch.randn(c, generator=g) * 0.1
        bn.running_mean = torch.randn(c, generator=g) * 0.2
        bn.running_var = torch.rand(c, generator=g) + 0.5
    return m.eval()


@pytest.fixture(scope="module")
def artifacts():
    import edgert

    x = np.zeros((1, 1, 6, 6), np.float32)
    return {fold: edgert.compile(_model(), x, fold_bn=fold) for fold in (True, False)}


def _stream(batch: int, n: int = 5):
    rng = np.random.default_rng(batch)
    return [(rng.standard_normal((batch, 1, 6, 6)) * 1.5 + 0.7).astype(np.float32) for _ in range(n)]


class NormRule:
    """The norm policy's rule on torch BatchNorms ``bns``: running moments of each one's input, applied
    as mean and variance mixed with the source's by ``source_weight``."""

    def __init__(self, bns, source_weight):
        self.bns, self.w = bns, source_weight
        self.m1 = [bn.running_mean.double().numpy().copy() for bn in bns]
        self.m2 = [bn.running_var.double().numpy() + m ** 2 for bn, m in zip(bns, self.m1)]
        self.src1, self.src2 = [m.copy() for m in self.m1], [m.copy() for m in self.m2]

    def update(self, i, t, a):
        """Blend BatchNorm i's input moments over every axis but 1 of ``t`` in with weight a; apply."""
        axes = (0,) + tuple(range(2, t.ndim))
        self.m1[i] = (1 - a) * self.m1[i] + a * t.mean(axes)
        self.m2[i] = (1 - a) * self.m2[i] + a * (t ** 2).mean(axes)
        a1 = (1 - self.w) * self.m1[i] + self.w * self.src1[i]
        a2 = (1 - self.w) * self.m2[i] + self.w * self.src2[i]
        self.bns[i].running_mean = torch.from_numpy(a1).float()
        self.bns[i].running_var = torch.from_numpy(a2 - a1 ** 2).float()


def _torch_reference(xs, momentum, source_weight, model=None):
    """Outputs of the torch model (default ``_model()``) per batch, before that batch's update, updating
    BN by the rule: running moments m1, m2; applied moments mixed with the source's by ``source_weight``."""
    model = _model() if model is None else model
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    rule = NormRule(bns, source_weight)
    seen = {}
    hooks = [bn.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].double().numpy()))
             for i, bn in enumerate(bns)]
    outs = []
    for x in xs:
        with torch.no_grad():
            outs.append(model(torch.from_numpy(x)).numpy())
        a = 1 - (1 - momentum) ** len(x)
        for i in range(len(bns)):
            rule.update(i, seen[i], a)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("batch,source_weight", [(1, 0.0), (1, 0.3), (4, 0.3)])
def test_norm_matches_torch_running_moments(artifacts, fold, batch, source_weight):
    xs = _stream(batch)
    policy = make_policy("norm", Engine(artifacts[fold]), momentum=0.2, source_weight=source_weight,
                         refold_every=1, guard=False)
    ref = _torch_reference(xs, 0.2, source_weight)
    for x, want in zip(xs, ref):
        np.testing.assert_allclose(policy.run(x), want, rtol=1e-4, atol=1e-4)
    assert policy.stats()["layers"] == 3 and policy.stats()["samples"] == 5 * batch


def test_folded_artifact_keeps_source_params_and_taps(artifacts):
    plan = artifacts[True].manifest["adapt"]
    assert [e["kind"] for e in plan["norm"]] == ["folded"] * 3
    assert "batch_norm" not in [n["op"] for n in artifacts[True].manifest["graph"]["nodes"]]
    stages = artifacts[True].manifest["stages"]
    assert set(plan["taps"]) <= {o for s in stages for o in s.get("taps", {}).get("outputs", s["outputs"])}
    # inference runs libraries without the taps (they would cost every call); a second one has them
    assert not set(plan["taps"]) & {o for s in stages for o in s["outputs"]}
    engine = Engine(artifacts[True])
    x = _stream(2)[0]
    y, taps = engine.run_with_taps(x)
    assert y.shape == (2, 5) and set(taps) == set(plan["taps"])
    np.testing.assert_array_equal(engine.run(x), y)
    assert [o["name"] for o in artifacts[True].manifest["outputs"]] == [artifacts[True].graph.outputs[0]]


def test_state_roundtrip_reset_and_errors(artifacts, tmp_path):
    engine = Engine(artifacts[True])
    source = engine.run(_stream(3)[0])
    policy = make_policy("norm", engine, momentum=0.3, refold_every=1, guard=False)
    for x in _stream(2):
        policy.run(x)
    adapted = engine.run(_stream(3)[0])
    assert not np.allclose(adapted, source)
    path = save_state(policy, tmp_path / "s.npz")
    policy.reset()
    np.testing.assert_allclose(engine.run(_stream(3)[0]), source, rtol=1e-5, atol=1e-5)
    load_state(policy, path)
    np.testing.assert_allclose(engine.run(_stream(3)[0]), adapted, rtol=1e-6)
    bad = policy.state_dict()
    bad[next(iter(bad))] = np.zeros(99)
    with pytest.raises(InputError, match="expected"):
        policy.load_state_dict(bad)
    with pytest.raises(InputError, match="missing"):
        policy.load_state_dict({})


def test_norm_needs_batchnorm():
    import edgert

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(4, 3)).eval()
    art = edgert.compile(model, np.zeros((1, 1, 4, 3), np.float32))
    assert "norm" in POLICIES
    with pytest.raises(EdgertError, match="no BatchNorm"):
        make_policy("norm", Engine(art))


def test_refold_every_matches_reference_at_refold_points(artifacts):
    """Moments update every sample; weights change only every 3rd sample (then equal the reference)."""
    xs = _stream(1, 7)
    policy = make_policy("norm", Engine(artifacts[True]), momentum=0.2, refold_every=3, guard=False)
    ref_policy = make_policy("norm", Engine(artifacts[False]), momentum=0.2, refold_every=3, guard=False)
    for x in xs:
        np.testing.assert_allclose(policy.run(x), ref_policy.run(x), rtol=1e-4, atol=1e-4)
    assert policy.stats()["refolds"] == 1 + 2  # at construction, after samples 3 and 6


@pytest.mark.parametrize("fold", [True, False])
def test_large_batch_with_momentum_one_is_training_mode_batchnorm(artifacts, fold):
    """At a = 1 the layer-by-layer update of a large batch equals torch's training-mode BatchNorm."""
    x = _stream(16, 1)[0]
    policy = make_policy("norm", Engine(artifacts[fold]), momentum=1.0, source_weight=0.0,
                         rerun_from=16, guard=False)
    with torch.no_grad():
        want = _model().train()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(policy.run(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 3), (2, 5), (1, 4, 3, 3), (3, 2, 7, 5)])
def test_moments_kernel_matches_reference(shape):
    from edgert.runtime.adapt.norm import moments, moments_ref

    t = np.random.default_rng(0).standard_normal(shape).astype(np.float32) + 2
    m1, m2 = moments_ref(t)
    np.testing.assert_allclose(m1, t.astype(np.float64).mean(axis=tuple(i for i in range(t.ndim) if i != 1)))
    for got, want in zip(moments(t), (m1, m2)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("fold", [True, False])
def test_update_kernel_matches_numpy_reference(artifacts, fold):
    engine = Engine(artifacts[fold])
    policy = make_policy("norm", engine, guard=False)
    x = _stream(3, 1)[0]
    taps = engine.run_with_taps(x)[1]
    for e in policy.layers:
        bn = e["bn"]
        if fold:  # a zero-scale channel: its statistics must stay
            ok = policy._applied[bn][3]
            ok[0] = False
        before = policy._m1[bn].copy(), policy._m2[bn].copy()
        policy._update_ref(e, taps[e["tap"]], 0.3)
        want = policy._m1[bn], policy._m2[bn]
        policy._m1[bn], policy._m2[bn] = before[0].copy(), before[1].copy()
        policy._update(e, taps[e["tap"]], 0.3)
        np.testing.assert_allclose(policy._m1[bn], want[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(policy._m2[bn], want[1], rtol=1e-10, atol=1e-12)
        if fold:
            assert policy._m1[bn][0] == before[0][0] and not np.allclose(policy._m1[bn][1:], before[0][1:])
