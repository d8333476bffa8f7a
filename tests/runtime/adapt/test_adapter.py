"""The adapter policy: compiled side blocks, and each device update against torch autograd of the same rule."""

import numpy as np
import pytest

import edgert
from edgert.errors import EdgertError, InputError
from edgert.ops.reference import run_graph_ref
from edgert.runtime.adapt import make_policy
from edgert.runtime.engine import Engine

torch = pytest.importorskip("torch")
nn = torch.nn
X0 = np.zeros((1, 1, 6, 6), np.float32)


def _model() -> "nn.Module":
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(6, 3))
    m[1].running_mean.uniform_(-0.2, 0.2)
    m[1].running_var.uniform_(0.5, 1.5)
    return m.eval()


def _stream(batch: int, n: int = 3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 1, 6, 6)) * 1.5 + 0.3).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def artifacts():
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((64, 1, 6, 6)).astype(np.float32), "y": rng.integers(0, 3, 64)}
    return {"plain": edgert.compile(_model(), X0),
            "identity": edgert.compile(_model(), X0, adapters=True),
            "warm": edgert.compile(_model(), X0, adapters=True, adapter_data=data, adapter_steps=30)}


def test_zero_init_adapters_change_nothing(artifacts):
    art = artifacts["identity"]
    plan = art.manifest["adapt"]["adapter"]
    assert [b["channels"] for b in plan["blocks"]] == [4, 6] and plan["warmup"] is None
    assert all(not art.params[k].any() for k in plan["params"])
    x = _stream(5)[0]
    with torch.no_grad():
        want = _model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_graph_ref(art.graph, {"input": x})[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Engine(art).run(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Engine(art).run(x), Engine(artifacts["plain"]).run(x), rtol=1e-6, atol=1e-6)


def test_warm_up_changes_only_adapter_params(artifacts):
    warm, ident = artifacts["warm"], artifacts["identity"]
    plan = warm.manifest["adapt"]["adapter"]
    assert plan["warmup"]["steps"] == 30 and plan["warmup"]["scored_against"] == "labels"
    assert warm.params.keys() == ident.params.keys()
    for k, v in ident.params.items():
        if k in plan["params"]:
            assert np.abs(warm.params[k]).max() > 1e-4, k
        else:
            np.testing.assert_array_equal(warm.params[k], v)


class _TorchAdapted(nn.Module):
    """The torch model with the artifact's side blocks hooked after its two conv blocks (ReLUs 2 and 5)."""

    def __init__(self, params: dict[str, np.ndarray]):
        super().__init__()
        self.net = _model()
        self.side = nn.ParameterList(nn.Parameter(torch.tensor(params[f"adapter.{k}.{p}"]))
                                     for k in range(2) for p in ("weight", "bias"))
        self.a: list[torch.Tensor] = []
        self.kept = 0
        for k, i in enumerate((2, 5)):
            self.net[i].register_forward_hook(lambda mod, inp, out, k=k: self._add(k, out))

    def _add(self, k: int, h: torch.Tensor) -> torch.Tensor:
        a = nn.functional.conv2d(h, self.side[2 * k], self.side[2 * k + 1])
        self.a.append(a)
        return h + a

    def loss(self, x: np.ndarray, margin: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Entropy of the confident samples (mean over the batch) + lam * sum_k mean |a_k|, as the policy."""
        self.a = []
        z = self.net(torch.from_numpy(x))
        logp = z.log_softmax(1)
        h = -(logp.exp() * logp).sum(1)
        self.kept += int((h < margin).sum())
        ent = (h * (h < margin)).sum() / len(x)
        return ent + lam * sum(a.abs().mean() for a in self.a), z


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch,chunk", [(1, 1), (4, 1), (4, 3), (4, None)])  # None: the whole batch at once
def test_update_matches_torch_autograd(artifacts, optimizer, batch, chunk):
    art = artifacts["warm"]
    xs = _stream(batch)
    ref = _TorchAdapted(art.params)
    with torch.no_grad():  # a margin between the entropies, so the filter keeps some samples and drops others
        z = ref.net(torch.from_numpy(np.concatenate(xs)))
        h = -(z.softmax(1) * z.log_softmax(1)).sum(1).numpy()
    margin = float(np.median(h)) + 1e-6
    lr, lam = 0.05, 0.7
    policy = make_policy("adapter", Engine(art), optimizer=optimizer, lr=lr, lam=lam,
                         margin=margin / np.log(3), guard=False, chunk=chunk)
    opt = (torch.optim.SGD(ref.side, lr=lr) if optimizer == "sgd" else torch.optim.Adam(ref.side, lr=lr))
    for x in xs:
        loss, z = ref.loss(x, margin, lam)
        np.testing.assert_allclose(policy.run(x), z.detach().numpy(), rtol=1e-4, atol=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = policy.state_dict()
        for k, p in enumerate(ref.side):
            name = f"adapter.{k // 2}.{('weight', 'bias')[k % 2]}"
            np.testing.assert_allclose(state[name], p.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    assert policy.stats()["confident_samples"] == ref.kept > 0
    assert batch == 1 or ref.kept < 3 * batch  # the filter dropped some samples


class _TorchLowRank(_TorchAdapted):
    """The torch model with trainable rank-r bottlenecks after the trained conv blocks and, when only
    the last is trained (what --adapter-rank with a budget for the last block compiles), the first
    block's full side block frozen."""

    def __init__(self, params: dict[str, np.ndarray], trained: list[int]):
        nn.Module.__init__(self)
        self.net = _model()
        self.side = nn.ParameterList(nn.Parameter(torch.tensor(params[f"adapter.{k}.{layer}.{p}"]))
                                     for k in trained for layer in ("down", "up") for p in ("weight", "bias"))
        self.a, self.kept = [], 0
        if trained == [1]:
            frozen = [torch.tensor(params[f"adapter.0.{p}"]) for p in ("weight", "bias")]
            self.net[2].register_forward_hook(lambda mod, inp, out: out + nn.functional.conv2d(out, *frozen))
        for j, k in enumerate(trained):
            self.net[(2, 5)[k]].register_forward_hook(lambda mod, inp, out, j=j: self._add(j, out))

    def _add(self, j: int, h: torch.Tensor) -> torch.Tensor:
        d, db, u, ub = self.side[4 * j:4 * j + 4]
        a = nn.functional.conv2d(nn.functional.conv2d(h, d, db), u, ub)
        self.a.append(a)
        return h + a


@pytest.mark.parametrize("budgeted", [True, False])
def test_low_rank_blocks_train_as_torch_autograd(budgeted):
    """With a budget that fits only the last block, it alone is trained (its own walk, the side output
    recomputed from the bottleneck); without one, every block is (the graph walk)."""
    from edgert.compilers.adapters import plan_blocks
    from edgert.compilers.compile import import_model, optimize

    graph = optimize(import_model(_model(), X0))
    _, _, k, both = plan_blocks(graph, 2, None, 1)
    _, adapters, k1, last = plan_blocks(graph, 2, both["step_peak"] - 1, 1)
    assert (k, k1) == (2, 1) and last["step_peak"] < both["step_peak"]
    assert [a.rank for a in adapters] == [None, 2]
    with pytest.raises(EdgertError, match="too small for the adapter step at batch 1.*--adapter-rank"):
        plan_blocks(graph, 2, 256, 1)
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((64, 1, 6, 6)).astype(np.float32), "y": rng.integers(0, 3, 64)}
    art = edgert.compile(_model(), X0, adapters=True, adapter_data=data, adapter_steps=30, adapter_rank=2,
                         adapt_memory=both["step_peak"] - 1 if budgeted else None)
    plan = art.manifest["adapt"]["adapter"]
    trained = [1] if budgeted else [0, 1]
    assert [b["name"] for b in plan["blocks"]] == [f"adapter.{k}" for k in trained]
    assert plan["walk"] == ("bottleneck" if budgeted else "graph")
    if budgeted:
        assert plan["frozen_blocks"] == ["adapter.0"] and np.abs(art.params["adapter.0.weight"]).max() > 1e-4
    ref = _TorchLowRank(art.params, trained)
    lr, lam, margin = 0.05, 0.7, 1.0
    policy = make_policy("adapter", Engine(art), lr=lr, lam=lam, margin=margin, guard=False, memory_every=1)
    opt = torch.optim.Adam(ref.side, lr=lr)
    for x in _stream(1, 4):
        loss, z = ref.loss(x, margin * np.log(3), lam)
        np.testing.assert_allclose(policy.run(x), z.detach().numpy(), rtol=1e-4, atol=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = policy.state_dict()
        for name, p in zip(plan["params"], ref.side):
            np.testing.assert_allclose(state[name], p.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    if budgeted:  # kept: the trained block's input h and its bottleneck (float32, 3x3 after the pool); not
        # its side output, nothing of the frozen block, none of norm's taps
        assert "adapter.0.weight" not in state
        assert policy.stats()["step_memory"]["kept"] == 4 * (6 * 3 * 3 + 2 * 3 * 3)


def test_bottleneck_grads_match_the_reference():
    from edgert.runtime.adapt.adapter import bottleneck_grads, bottleneck_grads_ref

    rng = np.random.default_rng(3)
    n, c, r = 2, 6, 2
    h, mid = rng.standard_normal((n, c, 3, 3)), rng.standard_normal((n, r, 3, 3))
    w_up, b_up = rng.standard_normal((c, r, 1, 1)), rng.standard_normal(c)
    for g in (rng.standard_normal((n, c, 3, 3)), np.broadcast_to(rng.standard_normal((n, c, 1, 1)), (n, c, 3, 3))):
        want = bottleneck_grads_ref(g, h, mid, w_up[:, :, 0, 0], b_up, 0.1)
        f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
        got = tuple(np.zeros(w.shape, np.float32) for w in want)
        bottleneck_grads(f32(g), f32(h), f32(mid), f32(w_up), f32(b_up), 0.1, got)
        bottleneck_grads(f32(g), f32(h), f32(mid), f32(w_up), f32(b_up), 0.1, got)  # adds into
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, 2 * b, rtol=1e-5, atol=1e-5)


def test_l1_seed_overwrites_only_a_tap_given_up():
    from edgert.runtime.adapt.adapter import l1_seed

    a = np.float32([[-2.0, 0.0, 3.0]])
    kept = l1_seed(a, 0.5)
    np.testing.assert_array_equal(kept, [[-0.5, 0.0, 0.5]])
    assert a[0, 0] == -2.0
    assert l1_seed(a, 0.5, overwrite=True) is a and a[0, 2] == 0.5


def test_reset_state_roundtrip_and_memory(artifacts):
    art = artifacts["warm"]
    engine = Engine(art)
    x_probe = _stream(3, 1, seed=9)[0]
    source = engine.run(x_probe)
    policy = make_policy("adapter", engine, lr=0.05, margin=1.0, guard=False)
    for x in _stream(2):
        policy.run(x)
    adapted = engine.run(x_probe)
    assert np.abs(adapted - source).max() > 1e-4
    state = policy.state_dict()
    policy.reset()
    np.testing.assert_array_equal(engine.run(x_probe), source)
    policy.load_state_dict(state)
    np.testing.assert_array_equal(engine.run(x_probe), adapted)
    # the restored optimizer state continues exactly like the run never stopped
    twin = make_policy("adapter", Engine(art), lr=0.05, margin=1.0, guard=False)
    for x in _stream(2):
        twin.run(x)
    x = _stream(2, 1, seed=5)[0]
    np.testing.assert_array_equal(policy.run(x), twin.run(x))
    np.testing.assert_array_equal(engine.run(x_probe), twin.engine.run(x_probe))
    mem = policy.stats()["step_memory"]
    n = policy.stats()["adapter_params"]
    assert n == 4 * 4 + 4 + 6 * 6 + 6
    assert mem["optimizer"] == 2 * 4 * n and mem["gradients"] == 4 * n  # Adam: two float32 moments
    assert mem["transient"] >= mem["gradients"]         # tracemalloc sees NumPy's buffers
    # one sample's taps at a time (chunk 1), only those the adapter's step keeps, and the batch's logits
    # [2, 3]; float32
    assert mem["kept"] == sum(4 * np.prod(engine.artifact.manifest["specs"][t]["shape"][1:])
                              for t in art.manifest["adapt"]["adapter"]["taps"]) + 4 * 2 * 3
    assert mem["step_peak"] == mem["kept"] + mem["optimizer"] + mem["transient"]
    bad = dict(state, **{"adapter.0.weight": np.zeros(3, np.float32)})
    with pytest.raises(InputError, match="expected"):
        policy.load_state_dict(bad)


def test_refuses_artifact_without_adapters_and_bad_options(artifacts):
    with pytest.raises(EdgertError, match="recompile it with `edgert compile MODEL --adapters"):
        make_policy("adapter", Engine(artifacts["plain"]))
    with pytest.raises(EdgertError, match="optimizer in"):
        make_policy("adapter", Engine(artifacts["warm"]), optimizer="rmsprop")


def test_side_blocks_reset_when_the_stream_returns_to_the_source(artifacts):
    """The shift reset (edgert.runtime.adapt.shift) on the adapter: after a long shifted stretch, a
    source-like sample puts the side blocks back to the warmed-up ones, and that sample is answered and
    adapted on from there, as by a fresh policy."""
    art = artifacts["warm"]
    rng = np.random.default_rng(0)
    p = make_policy("adapter", Engine(art), lr=0.05, margin=1.0, guard=False)
    for _ in range(60):
        p.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    assert p.stats()["shift_resets"] == 0
    back = (rng.standard_normal((1, 1, 6, 6)) * 0.3).astype(np.float32)
    out = p.run(back)
    assert p.stats()["shift_resets"] == 1 and "side blocks reset" in p.stats()["events"][-1]
    fresh = make_policy("adapter", Engine(art), lr=0.05, margin=1.0, guard=False)
    np.testing.assert_array_equal(out, fresh.run(back))
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(p.state_dict()[k], v, err_msg=k)
    off = make_policy("adapter", Engine(art), lr=0.05, margin=1.0, guard=False, shift_margin=None)
    for _ in range(60):
        off.run((rng.standard_normal((1, 1, 6, 6)) * 2.5 + 3.0).astype(np.float32))
    off.run(back)
    assert off.stats()["shift_resets"] == 0


def test_adam_step_matches_its_reference_and_torch():
    from edgert.runtime.adapt.adapter import adam_step, adam_step_ref

    rng = np.random.default_rng(3)
    p = rng.standard_normal((6, 4, 1, 1)).astype(np.float32)
    ours, ref = [p.copy(), np.zeros_like(p), np.zeros_like(p)], [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = torch.optim.Adam([tp], lr=0.01)
    for t in range(1, 6):
        g = rng.standard_normal(p.shape).astype(np.float32)
        ours[0] = adam_step(ours[0], g, ours[1], ours[2], 0.01, 0.9, 0.999, t)
        ref[0] = adam_step_ref(ref[0], g, ref[1], ref[2], 0.01, 0.9, 0.999, t)
        tp.grad = torch.from_numpy(g)
        opt.step()
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours[0], tp.detach().numpy(), rtol=1e-5, atol=1e-6)
