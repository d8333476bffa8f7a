"""Adaptation of spiking (stateful) models: taps over time, norm against snntorch, knn against NumPy.

The model is conv-BN-Leaky, linear-BN-Leaky, linear-Leaky: the first BatchNorm is folded into its conv
(or kept), the second into a Linear that is then fused with its neuron (or kept).
"""

import dataclasses

import numpy as np
import pytest

from edgert.ops.reference import run_steps_ref
from edgert.runtime.adapt import make_policy
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_knn import _knn_ref
from tests.runtime.adapt.test_norm import NormRule

torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")
nn = torch.nn
reset = pytest.importorskip("snntorch.utils").reset
T = 12


def _model() -> "nn.Module":
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), snn.Leaky(beta=0.8, init_hidden=True),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 12), nn.BatchNorm1d(12),
                      snn.Leaky(beta=0.8, init_hidden=True), nn.Linear(12, 5),
                      snn.Leaky(beta=0.8, init_hidden=True, output=True))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in (m[0], m[5], m[8]):
            lin.weight.mul_(3.0)
        for bn in (m[1], m[6]):
            c = bn.num_features
            bn.weight.data = torch.rand(c, generator=g) + 0.5
            bn.bias.data = torch.randn(c, generator=g) * 0.3 + 0.3
            bn.running_mean = torch.randn(c, generator=g) * 0.2
            bn.running_var = torch.rand(c, generator=g) + 0.5
    return m.eval()


@pytest.fixture(scope="module")
def artifacts():
    import edgert

    x = np.zeros((1, 1, 6, 6), np.float32)
    return {fold: edgert.compile(_model(), x, fold_bn=fold) for fold in (True, False)}


def _stream(batch: int, n: int = 4, rate: float = 0.5):
    """Rate-coded spike sequences [T, batch, 1, 6, 6] with a per-batch shift of the spike rate."""
    rng = np.random.default_rng(batch)
    return [(rng.random((T, batch, 1, 6, 6)) < rate * rng.random((1, batch, 1, 6, 6)) * 2).astype(np.float32)
            for _ in range(n)]


def test_plan_names_fused_and_folded_batchnorms_and_features(artifacts):
    plan = artifacts[True].manifest["adapt"]
    assert [e["kind"] for e in plan["norm"]] == ["folded", "fused"] and not plan["skipped"]
    assert [e["kind"] for e in artifacts[False].manifest["adapt"]["norm"]] == ["kept", "kept"]
    assert plan["features"] == "7"  # the hidden Leaky's spikes feed the classifier


@pytest.mark.parametrize("fold", [True, False])
def test_run_with_taps_matches_run_and_reference(artifacts, fold):
    art = artifacts[fold]
    x = _stream(3, 1)[0]
    engine = Engine(art)
    y, taps = engine.run_with_taps(x)
    np.testing.assert_array_equal(y, engine.run(x))
    names = art.manifest["adapt"]["taps"]
    assert set(taps) == set(names) and all(taps[k].shape[:2] == (T, 3) for k in names)
    g = art.graph
    tapped = dataclasses.replace(g, outputs=tuple(names))
    for name, want in zip(names, run_steps_ref(tapped, {"x": x})):
        np.testing.assert_allclose(taps[name], want, rtol=1e-5, atol=1e-5)


def _snntorch_reference(xs, momentum, source_weight):
    """Output spikes [T, B, C] of snntorch per batch, before that batch's update, updating each
    BatchNorm by the rule: moments of its input over time, batch and space, mixed with the source's."""
    model = _model()
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    rule = NormRule(bns, source_weight)
    seen: dict[int, list] = {}
    hooks = [bn.register_forward_hook(lambda mod, inp, out, i=i: seen[i].append(inp[0].double().numpy()))
             for i, bn in enumerate(bns)]
    outs = []
    for x in xs:
        seen.update((i, []) for i in range(len(bns)))
        reset(model)
        with torch.no_grad():
            outs.append(torch.stack([model(torch.from_numpy(x[t]))[0] for t in range(len(x))]).numpy())
        a = 1 - (1 - momentum) ** x.shape[1]
        for i in range(len(bns)):
            rule.update(i, np.concatenate(seen[i]), a)  # [T * B, C, ...]
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("batch,source_weight", [(1, 0.0), (4, 0.3)])
def test_norm_matches_snntorch_spike_for_spike(artifacts, fold, batch, source_weight):
    xs = _stream(batch)
    engine = Engine(artifacts[fold])
    policy = make_policy("norm", engine, momentum=0.3, source_weight=source_weight, refold_every=1,
                         rerun_from=None, guard=False)
    ref = _snntorch_reference(xs, 0.3, source_weight)
    for k, (x, want) in enumerate(zip(xs, ref)):
        got = policy.run(x)
        assert got.shape == (T, batch, 5)
        np.testing.assert_array_equal(got, want, err_msg=f"batch {k}")
    assert sum(r.sum() for r in ref) > 20 * batch, "the model must spike to test anything"
    assert not np.array_equal(ref[-1], _snntorch_reference(xs[-1:], 0.3, source_weight)[0]), \
        "the adapted statistics must change the spikes"
    assert policy.stats()["samples"] == len(xs) * batch


@pytest.mark.parametrize("fold", [True, False])
def test_norm_update_kernel_matches_numpy_reference_over_time(artifacts, fold):
    engine = Engine(artifacts[fold])
    policy = make_policy("norm", engine, guard=False)
    taps = engine.run_with_taps(_stream(3, 1)[0])[1]
    for e in policy.layers:
        bn = e["bn"]
        before = policy._m1[bn].copy(), policy._m2[bn].copy()
        policy._update_ref(e, taps[e["tap"]], 0.3)
        want = policy._m1[bn].copy(), policy._m2[bn].copy()
        policy._m1[bn], policy._m2[bn] = before[0].copy(), before[1].copy()
        policy._update(e, taps[e["tap"]], 0.3)
        np.testing.assert_allclose(policy._m1[bn], want[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(policy._m2[bn], want[1], rtol=1e-10, atol=1e-12)
        assert not np.allclose(want[0], before[0])


@pytest.mark.parametrize("batch", [1, 3])
def test_knn_on_spike_counts_matches_reference(artifacts, batch):
    """Logits = output spike counts and features = hidden spike counts, both from snntorch."""
    xs = _stream(batch, 10)
    model = _model()
    feats, logits = [], []
    hook = model[8].register_forward_hook(lambda mod, inp, out: feats[-1].append(inp[0].numpy()))
    for x in xs:
        feats.append([])
        reset(model)
        with torch.no_grad():
            logits.append(torch.stack([model(torch.from_numpy(x[t]))[0] for t in range(T)]).sum(0).numpy())
    hook.remove()
    feats = [np.sum(f, axis=0) for f in feats]
    p = [np.exp(y - y.max(1, keepdims=True)) for y in logits]
    top = np.concatenate([v / v.sum(1, keepdims=True) for v in p]).max(1)
    opts = dict(capacity=4, k=2, tau=0.2, weight=0.6, confidence=float(np.median(top)))
    policy = make_policy("knn", Engine(artifacts[True]), guard=False, **opts)
    ref = _knn_ref(logits, feats, **opts)
    got = [policy.run(x) for x in xs]
    assert policy.stats()["memory"] == 4 and got[0].shape == (batch, 5)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert any(not np.allclose(r, np.log(v / v.sum(1, keepdims=True))) for r, v in zip(ref, p))


def test_guard_watches_spike_counts(artifacts):
    """The guard's window holds argmaxes of the output summed over time."""
    policy = make_policy("norm", Engine(artifacts[True]), refold_every=1, window=4, max_share=1.0,
                         min_entropy=0.0)
    spikes = [policy.run(x) for x in _stream(1, 4)]
    assert all(s.shape == (T, 1, 5) for s in spikes)
    assert list(policy._preds) == [int(np.argmax(s.sum(0)[0])) for s in spikes]


def test_cli_adapting_run_chunks_samples_not_time(artifacts):
    from edgert.cli import _run_adapting

    x = np.concatenate(_stream(2, 2), axis=1)  # [T, 4, ...]
    policy = make_policy("norm", Engine(artifacts[True]))
    want = np.concatenate([policy.run(x[:, i:i + 2]) for i in (0, 2)], axis=1)
    np.testing.assert_array_equal(_run_adapting(Engine(artifacts[True]), x, "norm", 2, None), want)
    assert _run_adapting(Engine(artifacts[True]), x, "knn", 3, None).shape == (4, 5)
