"""The entropy policy against the same rule in torch: autograd on an eval-mode model, torch's Adam, and
the running-moment statistics of the norm policy."""

import numpy as np
import pytest

from edgert.errors import EdgertError
from edgert.runtime.adapt import make_policy
from edgert.runtime.adapt.base import load_state, save_state
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_norm import _model, _stream

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(scope="module")
def artifacts():
    import edgert

    x = np.zeros((1, 1, 6, 6), np.float32)
    return {fold: edgert.compile(_model(), x, fold_bn=fold) for fold in (True, False)}


def _normalized_entropy(logits: "torch.Tensor") -> "torch.Tensor":
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1) / np.log(logits.shape[1])


def _torch_reference(xs, lr, threshold, momentum, anchor):
    """Per batch: the output (before the update), then one Adam step on every BatchNorm's weight and
    bias from the mean entropy of the samples under the threshold, each pulled back towards its source
    value by 1 - (1 - anchor)^batch of the difference, then the running-moment update."""
    model = _model()
    bns = [m for m in model if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    affine = [p for bn in bns for p in (bn.weight, bn.bias)]
    opt = torch.optim.Adam(affine, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    source = [p.detach().clone() for p in affine]
    m1 = [bn.running_mean.double().numpy().copy() for bn in bns]
    m2 = [bn.running_var.double().numpy() + m ** 2 for bn, m in zip(bns, m1)]
    seen = {}
    for i, bn in enumerate(bns):
        bn.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].detach().double().numpy()))
    outs, kept = [], []
    for x in xs:
        logits = model(torch.from_numpy(x))
        outs.append(logits.detach().numpy())
        h = -(logits.log_softmax(1).exp() * logits.log_softmax(1)).sum(1)
        keep = _normalized_entropy(logits) < threshold
        kept.append(int(keep.sum()))
        if keep.any():
            opt.zero_grad()
            h[keep].mean().backward()
            opt.step()
            with torch.no_grad():
                for p, src in zip(affine, source):
                    p -= (1 - (1 - anchor) ** len(x)) * (p - src)
        a = 1 - (1 - momentum) ** len(x)
        for i, bn in enumerate(bns):
            axes = (0,) + tuple(range(2, seen[i].ndim))
            m1[i] = (1 - a) * m1[i] + a * seen[i].mean(axes)
            m2[i] = (1 - a) * m2[i] + a * (seen[i] ** 2).mean(axes)
            bn.running_mean = torch.from_numpy(m1[i]).float()
            bn.running_var = torch.from_numpy(m2[i] - m1[i] ** 2).float()
    return outs, kept, [(bn.weight.detach().numpy(), bn.bias.detach().numpy()) for bn in bns]


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("batch,anchor", [(1, 0.0), (4, 0.0), (4, 0.1)])
def test_entropy_steps_match_torch_autograd_and_adam(artifacts, fold, batch, anchor):
    xs = _stream(batch, 6)
    with torch.no_grad():  # a threshold that keeps some samples of the first batches and drops others
        ent = _normalized_entropy(_model()(torch.from_numpy(np.concatenate(xs[:2])))).numpy()
    threshold = float(np.median(ent))
    want, kept, affine = _torch_reference(xs, lr=0.05, threshold=threshold, momentum=0.2, anchor=anchor)
    assert 0 < sum(kept) < 6 * batch  # the filter both kept and dropped samples
    policy = make_policy("entropy", Engine(artifacts[fold]), lr=0.05, threshold=threshold, momentum=0.2,
                         anchor=anchor, source_weight=0.0, guard=False)  # the plain running moments the reference uses
    for x, w in zip(xs, want):
        np.testing.assert_allclose(policy.run(x), w, rtol=1e-4, atol=1e-4)
    state = policy.state_dict()
    for bn, (gamma, beta) in zip(policy.adapted, affine):
        np.testing.assert_allclose(state[f"{bn}.gamma"], gamma, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state[f"{bn}.beta"], beta, rtol=1e-4, atol=1e-5)
    stats = policy.stats()
    assert stats["filtered"] == 6 * batch - sum(kept)
    assert stats["adam_steps"] == sum(k > 0 for k in kept)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("batch,chunk", [(4, 1), (16, 5)])  # 16: the large step, re-run layer by layer
def test_a_step_taken_by_chunks_equals_the_whole_batch_step(artifacts, fold, batch, chunk):
    """The same outputs and state whether the step's forwards and backward go a chunk at a time or the
    whole batch at once (eval-mode BatchNorm: samples are independent, so gradients and moment sums
    add up); a chunk keeps a chunk's values, not the batch's."""
    xs = _stream(batch, 4)
    with torch.no_grad():  # a threshold that keeps some samples and drops others: some chunks have none
        ent = _normalized_entropy(_model()(torch.from_numpy(np.concatenate(xs[:2])))).numpy()
    opts = dict(lr=0.05, threshold=float(np.median(ent)), guard=False)
    whole = make_policy("entropy", Engine(artifacts[fold]), chunk=batch, **opts)
    parts = make_policy("entropy", Engine(artifacts[fold]), chunk=chunk, **opts)
    for x in xs:
        np.testing.assert_allclose(parts.run(x), whole.run(x), rtol=1e-5, atol=1e-5)
    want, got = whole.state_dict(), parts.state_dict()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert parts.stats()["adam_steps"] == whole.stats()["adam_steps"] > 0
    m_whole, m_parts = (p.stats()["step_memory"][str(batch)] for p in (whole, parts))
    assert m_parts["kept"] < m_whole["kept"]


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (1, 64, 4, 4)])
def test_channel_sums_match_the_numpy_reference(shape):
    from edgert.runtime.adapt.entropy import channel_sums, channel_sums_ref

    rng = np.random.default_rng(0)
    g, t = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    cases = [g, g[:, :, ::-1] if g.ndim > 2 else g[::-1]]  # contiguous and strided
    if g.ndim == 4:  # a global pool's gradient: one value per channel, broadcast over positions
        cases.append(np.broadcast_to(g[:, :, :1, :1], shape))
    for gi in cases:
        for got, want in zip(channel_sums(gi, t), channel_sums_ref(gi, t)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_filter_drops_unconfident_samples(artifacts):
    """Every sample above the threshold: nothing is learned; at threshold 1 every sample counts."""
    x = _stream(4, 1)[0]
    strict = make_policy("entropy", Engine(artifacts[True]), threshold=1e-6, guard=False)
    strict.run(x)
    state = strict.state_dict()
    for bn in strict.adapted:
        np.testing.assert_array_equal(state[f"{bn}.gamma"], strict._src[bn]["gamma"].astype(np.float32))
    assert strict.stats()["filtered"] == 4 and strict.stats()["adam_steps"] == 0
    assert strict.stats()["step_peak_bytes"] is None
    loose = make_policy("entropy", Engine(artifacts[True]), threshold=1.0, guard=False)
    loose.run(x)
    assert loose.stats()["filtered"] == 0 and loose.stats()["adam_steps"] == 1
    assert any(not np.array_equal(loose.state_dict()[f"{bn}.gamma"], state[f"{bn}.gamma"]) for bn in loose.adapted)


def test_state_roundtrip_and_reset(artifacts, tmp_path):
    engine = Engine(artifacts[True])
    probe = _stream(3, 1)[0]
    source = engine.run(probe)
    policy = make_policy("entropy", engine, lr=0.05, threshold=1.0, guard=False)
    for x in _stream(2, 3):
        policy.run(x)
    adapted = engine.run(probe)
    assert not np.allclose(adapted, source)
    state = policy.state_dict()
    assert state["adam_t"] == 3 and any(k.endswith(".gamma.adam_v") for k in state)
    path = save_state(policy, tmp_path / "s.npz")
    policy.reset()
    np.testing.assert_allclose(engine.run(probe), source, rtol=1e-5, atol=1e-5)
    assert policy.state_dict()["adam_t"] == 0
    load_state(policy, path)
    np.testing.assert_allclose(engine.run(probe), adapted, rtol=1e-6)
    # the next step continues Adam where it was: equal to a policy that never stopped
    twin = make_policy("entropy", Engine(artifacts[True]), lr=0.05, threshold=1.0, guard=False)
    for x in _stream(2, 3):
        twin.run(x)
    x = _stream(5, 1)[0]
    np.testing.assert_allclose(policy.run(x), twin.run(x), rtol=1e-6)
    np.testing.assert_allclose(engine.run(probe), twin.engine.run(probe), rtol=1e-6)


def test_step_memory_is_reported_by_parts(artifacts):
    policy = make_policy("entropy", Engine(artifacts[True]), threshold=1.0, guard=False)
    for x in _stream(4, 3):
        policy.run(x)
    m = policy.stats()["step_memory"]["4"]
    assert m["step_peak"] == m["kept"] + m["optimizer"] + m["transient"] == policy.stats()["step_peak_bytes"]
    channels = 4 + 6 + 8
    assert m["optimizer"] == 2 * 2 * 4 * channels  # Adam m and v for gamma and beta, float32
    assert m["transient"] >= m["gradients"] > 0


def test_entropy_needs_a_plan_and_valid_options(artifacts):
    import edgert

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(4, 3)).eval()
    art = edgert.compile(model, np.zeros((1, 1, 4, 3), np.float32))
    assert "entropy" not in art.manifest["adapt"]
    with pytest.raises(EdgertError, match="entropy plan"):
        make_policy("entropy", Engine(art))
    with pytest.raises(EdgertError, match="lr"):
        make_policy("entropy", Engine(artifacts[True]), lr=-1)
