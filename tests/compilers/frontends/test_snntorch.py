"""snntorch models compiled by edgert, spike for spike against snntorch itself over 30 time steps.

Each variant runs the compiled artifact (edgert.load(...).run(x[T, B, ...])) and snntorch's own time
loop on the same spike input. Spikes that differ are listed by the parity report with the deciding
membrane's distance from threshold; the tests bound that distance (float sums in another order move a
membrane by ulps) and the number of flips.
"""

import numpy as np
import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

import edgert
from edgert.errors import InputError, UnsupportedOpError
from edgert.runtime.parity import parity_report, trace

T, B = 30, 6


def _scaled(net: nn.Module, gain: float) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return net.eval()


def snntorch_run(net: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """snntorch's own loop: spikes and membranes of the last layer, each [T, B, ...]."""
    utils.reset(net)
    spk, mem = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out = net(x[t])
            spk.append(out[0])
            mem.append(out[-1])
    return torch.stack(spk).numpy(), torch.stack(mem).numpy()


def check_parity(net: nn.Module, x: torch.Tensor, tmp_path, max_flips: int = 2) -> dict:
    want_spk, want_mem = snntorch_run(net, x)
    engine = edgert.load(edgert.compile(net, x[0].numpy()).save(tmp_path / "snn.edgert"))
    got = engine.run(x.numpy())
    last = net[-1]
    thr = last.threshold.detach().numpy()
    report = parity_report(want_spk, got, want_mem, thr)
    assert len(report.flips) <= max_flips, str(report)
    assert report.max_distance <= 1e-5 * max(1.0, float(np.abs(thr).max())), str(report)
    assert report.expected_spikes > 20, "the variant must actually spike to test anything"
    if not report.flips:  # membranes, on request, through the streaming API
        spikes, mem = trace(engine, x.numpy(), engine.artifact.graph.nodes[-1].name)
        np.testing.assert_array_equal(spikes, want_spk)
        np.testing.assert_allclose(mem, want_mem, atol=2e-5, rtol=1e-5)
    return engine.node_state()


def _fc(neuron_last, neuron_hidden=None, n_in=24, hidden=32, n_out=10, gain=2.5, seed=0):
    torch.manual_seed(seed)
    hidden_neuron = neuron_hidden or snn.Leaky(beta=0.9, init_hidden=True)
    return _scaled(nn.Sequential(nn.Linear(n_in, hidden), hidden_neuron, nn.Linear(hidden, n_out), neuron_last), gain)


def _spikes(shape, density=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()


LEAKY_VARIANTS = {
    "subtract": dict(beta=0.85),
    "zero": dict(beta=0.85, reset_mechanism="zero"),
    "none": dict(beta=0.6, reset_mechanism="none"),
    "subtract_no_delay": dict(beta=0.85, reset_delay=False),
    "zero_no_delay": dict(beta=0.85, reset_mechanism="zero", reset_delay=False),
    "graded": dict(beta=0.85, graded_spikes_factor=0.5, learn_graded_spikes_factor=True, threshold=0.7),
}


@pytest.mark.parametrize("variant", list(LEAKY_VARIANTS))
def test_leaky_fc_matches_snntorch(variant, tmp_path):
    kw = LEAKY_VARIANTS[variant]
    hidden = snn.Leaky(init_hidden=True, **kw)
    net = _fc(snn.Leaky(init_hidden=True, output=True, **kw), hidden)
    state = check_parity(net, _spikes((T, B, 24)), tmp_path)
    assert {n.op for n in edgert.compile(net, np.zeros((1, 24), np.float32)).graph.nodes} == {"linear_leaky"}
    assert sum(s["spikes"] for s in state.values()) > 0


def test_leaky_per_neuron_learnable_beta_and_threshold_clamped(tmp_path):
    torch.manual_seed(3)
    beta = torch.linspace(-0.3, 1.4, 10)  # outside [0, 1] at both ends: snntorch clamps in forward
    thr = torch.linspace(0.5, 1.5, 10)
    last = snn.Leaky(beta=beta, threshold=thr, learn_beta=True, learn_threshold=True, init_hidden=True, output=True)
    hidden = snn.Leaky(beta=torch.rand(32), learn_beta=True, threshold=torch.full((32,), 0.8),
                       learn_threshold=True, init_hidden=True)
    check_parity(_fc(last, hidden), _spikes((T, B, 24)), tmp_path)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_synaptic_matches_snntorch(reset, tmp_path):
    last = snn.Synaptic(alpha=0.7, beta=0.8, reset_mechanism=reset, init_hidden=True, output=True)
    hidden = snn.Synaptic(alpha=torch.rand(32), beta=0.9, learn_alpha=True, reset_mechanism=reset, init_hidden=True)
    check_parity(_fc(last, hidden, gain=1.5), _spikes((T, B, 24)), tmp_path)


def test_synaptic_without_reset_delay(tmp_path):
    last = snn.Synaptic(alpha=0.7, beta=0.8, reset_delay=False, init_hidden=True, output=True)
    check_parity(_fc(last, gain=1.5), _spikes((T, B, 24)), tmp_path)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_rleaky_all_to_all_matches_snntorch(reset, tmp_path):
    torch.manual_seed(5)
    last = snn.RLeaky(beta=0.85, linear_features=10, reset_mechanism=reset, init_hidden=True, output=True)
    hidden = snn.RLeaky(beta=0.9, linear_features=32, init_hidden=True)
    with torch.no_grad():
        hidden.recurrent.weight.mul_(2.0)
    check_parity(_fc(last, hidden), _spikes((T, B, 24)), tmp_path)


def test_rleaky_one_to_one_matches_snntorch(tmp_path):
    last = snn.RLeaky(beta=0.85, V=torch.linspace(-0.5, 0.5, 10), all_to_all=False, init_hidden=True, output=True)
    check_parity(_fc(last), _spikes((T, B, 24)), tmp_path)


def test_reset_mechanism_assigned_after_construction_follows_the_live_module(tmp_path):
    # The state function stays "subtract"; the reset_delay=False branch reads the new buffer ("zero").
    last = snn.Leaky(beta=0.85, reset_delay=False, init_hidden=True, output=True)
    last.reset_mechanism = "zero"
    net = _fc(last)
    node = edgert.compile(net, np.zeros((1, 24), np.float32)).graph.nodes[-1]
    assert (node.reset, node.instant_reset) == ("subtract", "zero")
    check_parity(net, _spikes((T, B, 24)), tmp_path)


def conv_snn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(12 * 2 * 2, 10), snn.Leaky(beta=0.8, init_hidden=True, output=True))
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
    return _scaled(net, 3.0)


def test_conv_snn_matches_snntorch(tmp_path):
    state = check_parity(conv_snn(), _spikes((T, B, 1, 8, 8), 0.4), tmp_path)
    assert set(state) == {"2", "5", "9"}


def test_unsupported_layers_are_all_listed():
    net = nn.Sequential(nn.Linear(4, 4), nn.GELU(), snn.Leaky(beta=0.9, inhibition=True, init_hidden=True),
                        nn.Linear(4, 2), snn.Alpha(alpha=0.6, beta=0.5, init_hidden=True))
    with pytest.raises(UnsupportedOpError) as e:
        edgert.compile(net, np.zeros((1, 4), np.float32))
    msg = str(e.value)
    assert "GELU at 1" in msg and "inhibition" in msg and "Alpha at 4" in msg


def test_activity_counts_come_from_the_compiled_run(tmp_path):
    from edgert.ops.spiking.counts import activity, energy_pj
    from edgert.targets import load_target

    net = _fc(snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = _spikes((T, B, 24), 0.05)
    engine = edgert.load(edgert.compile(net, x[0].numpy()).save(tmp_path / "a.edgert"))
    out = engine.run(x.numpy())
    hidden, last = activity(engine)
    assert last.spikes == np.count_nonzero(out) and last.samples == T * B and last.neurons == 10
    assert hidden.synops == np.count_nonzero(x.numpy()) * 32 and hidden.path == "event"
    assert last.synops == hidden.spikes * 10  # the hidden layer's spikes are the last layer's events
    e = energy_pj([hidden, last], load_target("loihi").energy)
    assert e["total_pj"] == pytest.approx((hidden.synops + last.synops) * 23.6
                                          + (hidden.neuron_updates + last.neuron_updates) * 81.0)


def test_spiking_artifact_profiles_per_time_step(tmp_path):
    from edgert.runtime.profile import profile_artifact

    path = edgert.compile(_fc(snn.Leaky(beta=0.9, init_hidden=True, output=True)),
                          np.zeros((1, 24), np.float32)).save(tmp_path / "p.edgert")
    report = profile_artifact(path, repeat=3)
    ops = {n["name"]: n["ops"] for n in report["nodes"]}
    assert ops["1"]["accumulate"] == 24 * 32 and report["total"]["latency_s"] > 0


@pytest.mark.parametrize("density", [0.05, 0.9])  # the event path and the dense path
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_in_spiking_input_is_named_and_the_next_run_is_clean(density, bad, tmp_path):
    """The first fused layer checks its input for NaN/Inf (the engine skips its own pass over it); the
    error still names the first bad value, and state is not left corrupted."""
    net = _fc(snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = _spikes((T, B, 24), density).numpy()
    engine = edgert.load(edgert.compile(net, x[0]).save(tmp_path / "n.edgert"))
    assert engine._kernel_checked == (True,)
    want = engine.run(x)
    xb = x.copy()
    xb[3, 1, 7] = bad
    with pytest.raises(InputError, match=rf"NaN or Inf \(first at index \({3 * B + 1}, 7\)\)"):
        engine.run(xb)
    np.testing.assert_array_equal(engine.run(x), want)


@pytest.mark.parametrize("density", [0.05, 0.6])  # every layer event-driven; the dense path (node by node)
def test_chain_of_fused_layers_runs_in_one_pass_like_node_by_node(density, tmp_path):
    """A chain of fused Linear+Leaky layers runs through the chain kernel (the kernels back to back);
    outputs and every node's state equal the node-by-node path's, and a dense layer falls back to it."""
    net = _fc(snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = _spikes((T, B, 24), density).numpy()
    path = edgert.compile(net, x[0]).save(tmp_path / "c.edgert")
    chained, by_node = edgert.load(path), edgert.load(path)
    assert chained._chain is not None
    by_node._chain = None
    for _ in range(2):  # a second run starts from reset too
        np.testing.assert_array_equal(chained.run(x), by_node.run(x))
    want = by_node.node_state()
    for name, state in chained.node_state().items():
        assert state.keys() == want[name].keys()
        for k, v in state.items():
            np.testing.assert_array_equal(v, want[name][k])
    paths = {s["path"] for s in want.values()}
    assert paths == {"event"} if density < 0.15 else "dense" in paths
    name = next(k for k in chained.params if k.endswith("bias"))
    new = {name: chained.params[name] + np.float32(0.75)}  # new parameters reach the chain
    for engine in (chained, by_node):
        engine.set_params(new)
    np.testing.assert_array_equal(chained.run(x), by_node.run(x))
    assert not np.array_equal(by_node.run(x), edgert.load(path).run(x))
