"""NIR: edgert imports its own exports spike for spike, and the NIR paper's reference graphs against
independent simulations of NIR's equations (forward Euler at dt, reset to v_reset in the same step)."""

from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

import edgert
from edgert.compilers.backends.nir import to_nir
from edgert.compilers.compile import build_artifact, optimize
from edgert.compilers.frontends.nir import from_nir
from edgert.errors import EdgertError, UnsupportedOpError
from edgert.runtime.parity import parity_report, trace

DATA = Path(__file__).resolve().parents[2] / "data" / "nir"
RNG = np.random.default_rng(0)


def _run(graph, x, tmp_path, name):
    return edgert.load(build_artifact(optimize(graph)).save(tmp_path / f"{name}.edgert")).run(x)


def _models():
    torch.manual_seed(0)
    fc = nn.Sequential(nn.Linear(20, 32), snn.Leaky(beta=0.9, init_hidden=True),
                       nn.Linear(32, 16), snn.Leaky(beta=torch.rand(16), reset_mechanism="zero", reset_delay=False,
                                                    graded_spikes_factor=0.5, init_hidden=True),
                       nn.Linear(16, 10), snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True, output=True))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(64, 10), snn.Leaky(beta=0.8, init_hidden=True, output=True))
    for net in (fc, conv):
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.weight.mul_(3.0)
    return {"fc": (fc, (20,)), "conv": (conv, (1, 8, 8))}


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_edgert_imports_its_own_export_spike_for_spike(kind, tmp_path):
    net, shape = _models()[kind]
    art = edgert.compile(net, np.zeros((1, *shape), np.float32))
    path = tmp_path / "m.nir"
    to_nir(art.graph, path)
    g = nir.read(str(path))  # plain NIR accepts the file
    note = g.metadata["edgert_note"]
    assert "subtractive reset" in (note.decode() if isinstance(note, bytes) else note)
    x = (RNG.random((30, 4, *shape)) < 0.3).astype(np.float32)
    want = edgert.load(art.save(tmp_path / "a.edgert")).run(x)
    got = edgert.load(edgert.compile(path).save(tmp_path / "b.edgert")).run(x)  # .nir through compile()
    assert want.sum() > 10
    np.testing.assert_array_equal(got, want)


def test_export_lists_what_nir_cannot_express():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.9, init_hidden=True), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(2 * 3 * 3, 4), snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True))
    with pytest.raises(UnsupportedOpError, match=r"max_pool2d '2'(.|\n)*rleaky"):
        to_nir(edgert.compile(net, np.zeros((1, 1, 8, 8), np.float32)).graph)


def test_lif_norse_matches_nir_equations(tmp_path):
    dt, steps = 1e-3, 60
    src = nir.read(str(DATA / "lif_norse.nir"))
    lif = src.nodes["1"]
    x = (RNG.random((steps, 3, 1)) * 0.6).astype(np.float32)  # input currents
    v = np.zeros((3, 1))
    want = []
    for t in range(steps):  # NIR: tau dv/dt = (v_leak - v) + r I, spike when v > thr, then v = v_reset
        v = v + dt / lif.tau * (lif.v_leak - v + lif.r * x[t].astype(np.float64))
        z = v > lif.v_threshold
        v = np.where(z, lif.v_reset, v)
        want.append(z.astype(np.float32))
    want = np.stack(want)
    got = _run(from_nir(DATA / "lif_norse.nir", dt=dt), x, tmp_path, "lif")
    assert want.sum() > 5
    np.testing.assert_array_equal(got, want)  # float64 reference; no membrane lands within an ulp here


def _sinabs_torch(src, x: torch.Tensor) -> torch.Tensor:
    """An independent torch simulation of the cnn_sinabs graph: IF neurons v += r dt I, reset to zero."""
    n = src.nodes
    state: dict[str, torch.Tensor] = {}
    outs = []
    for t in range(x.shape[0]):
        h = x[t]
        for key in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]:
            node = n[key]
            kind = type(node).__name__
            if kind == "Conv2d":
                h = F.conv2d(h, torch.from_numpy(node.weight), torch.from_numpy(node.bias),
                             stride=tuple(node.stride), padding=tuple(node.padding))
            elif kind == "SumPool2d":
                h = F.avg_pool2d(h, tuple(node.kernel_size), tuple(node.stride)) * float(np.prod(node.kernel_size))
            elif kind == "Flatten":
                h = h.flatten(1)
            elif kind == "Affine":
                h = h @ torch.from_numpy(node.weight).T + torch.from_numpy(node.bias)
            elif kind == "IF":
                v = state.get(key, torch.zeros_like(h)) + torch.from_numpy(node.r) * h
                z = (v > torch.from_numpy(node.v_threshold)).float()
                state[key] = v * (1 - z)
                h = z
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.slow
def test_cnn_sinabs_matches_an_independent_simulation(tmp_path):
    src = nir.read(str(DATA / "cnn_sinabs.nir"))
    x = (np.random.default_rng(1).random((16, 2, 2, 34, 34)) < 0.05).astype(np.float32)  # all layers fire
    with torch.no_grad():
        want = _sinabs_torch(src, torch.from_numpy(x)).numpy()
    engine = edgert.load(build_artifact(optimize(from_nir(DATA / "cnn_sinabs.nir", dt=1.0))).save(tmp_path / "c.edgert"))
    got = engine.run(x)
    report = parity_report(want, got, np.zeros_like(want), 0.0)  # flips only; conv sums differ in order
    assert want.sum() >= 10 and all(st["spikes"] > 0 for st in engine.node_state().values())
    assert len(report.flips) <= 0.01 * want.size, str(report)


def _loop_graph(hops: int) -> nir.NIRGraph:
    """input -> Linear -> LIF, with a loop LIF -> Linear x hops -> LIF."""
    rng = np.random.default_rng(2)

    def lin():
        return nir.Linear(weight=rng.standard_normal((4, 4)).astype(np.float32))

    ones = np.ones(4, np.float32)
    nodes = {"input": nir.Input({"input": np.array([4])}), "fc": lin(), "output": nir.Output({"output": np.array([4])}),
             "lif": nir.LIF(tau=ones * 1e-3, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    prev = "lif"
    for k in range(hops):
        nodes[f"rec{k}"] = lin()
        edges.append((prev, f"rec{k}"))
        prev = f"rec{k}"
    return nir.NIRGraph(nodes=nodes, edges=edges + [(prev, "lif")])


def test_unsupported_loops_and_missing_dt_are_clear_errors():
    with pytest.raises(EdgertError, match="only loops are a neuron's recurrent Affine/Linear"):
        from_nir(_loop_graph(2), dt=1e-4)
    with pytest.raises(EdgertError, match="pass dt"):
        from_nir(DATA / "lif_norse.nir")


def test_recurrent_lif_is_rleaky_and_matches_nir_equations(tmp_path):
    g = _loop_graph(1)
    graph = from_nir(g, dt=1e-4)
    assert [n.op for n in graph.nodes] == ["linear", "rleaky"]
    x = (RNG.random((80, 3, 4)) < 0.3).astype(np.float32) * 4
    want = simulate_nir(g, x, 1e-4)
    got = _run(graph, x, tmp_path, "rlif")
    assert 10 < want["lif"].sum() < want["lif"].size / 2
    np.testing.assert_array_equal(got, want["lif"])


def test_li_and_delay_match_nir_equations(tmp_path):
    """input -> Affine -> LIF -> Delay (3 steps) -> Affine -> LI -> output."""
    rng = np.random.default_rng(5)
    ones = np.ones(6, np.float32)
    nodes = {"input": nir.Input({"input": np.array([5])}),
             "fc1": nir.Affine(weight=rng.standard_normal((6, 5)).astype(np.float32) * 3, bias=ones * 0.5),
             "lif": nir.LIF(tau=ones * 2e-3, r=ones, v_leak=0 * ones, v_threshold=ones * 0.2, v_reset=0 * ones),
             "delay": nir.Delay(delay=ones * 3e-3),
             "fc2": nir.Affine(weight=rng.standard_normal((3, 6)).astype(np.float32), bias=np.zeros(3, np.float32)),
             "li": nir.LI(tau=np.array([5e-3, 1e-2, 2e-2], np.float32), r=np.full(3, 2.0, np.float32),
                          v_leak=np.zeros(3, np.float32)),
             "output": nir.Output({"output": np.array([3])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "delay"), ("delay", "fc2"),
                                         ("fc2", "li"), ("li", "output")])
    graph = from_nir(g, dt=1e-3)
    assert [n.op for n in graph.nodes] == ["linear", "leaky", "delay", "linear", "leaky_integrator"]
    assert graph.nodes[2].steps == 3
    x = (RNG.random((40, 2, 5)) < 0.4).astype(np.float32)
    want = simulate_nir(g, x, 1e-3)
    assert 10 < want["lif"].sum() < want["lif"].size / 2
    got = _run(graph, x, tmp_path, "d")
    assert np.all(got[:3] == 0)  # nothing arrives before the delay
    np.testing.assert_allclose(got, want["li"], rtol=1e-5, atol=1e-6)  # float32 membrane vs float64


@pytest.mark.parametrize("name", ["braille_noDelay_bias_zero", "braille_noDelay_noBias_subtract"])
def test_braille_recurrent_cubalif_matches_nir_simulation(name, tmp_path):
    """The NIR paper's Braille RNNs (CubaLIF with a recurrent Affine/Linear) against simulate_nir, both
    layers spike for spike, on random input spikes at the paper's dt = 1e-4 (NIR's reset to v_reset;
    the subtract file's name is ignored here as NIR does)."""
    path = DATA / f"{name}.nir"
    graph = from_nir(path, dt=1e-4)
    assert [n.op for n in graph.nodes] == ["linear", "rsynaptic", "linear", "synaptic"]
    x = (np.random.default_rng(3).random((150, 6, 12)) < 0.3).astype(np.float32)
    src = nir.read(str(path))
    want = simulate_nir(src, x, 1e-4)
    engine = edgert.load(build_artifact(optimize(graph)).save(tmp_path / "b.edgert"))
    got = engine.run(x)
    _, hidden = trace(engine, x, "lif1.lif", "spk")  # the recurrent layer's spikes, step by step
    for layer, spikes in (("lif2", got), ("lif1.lif", hidden)):
        report = parity_report(want[layer], spikes, want[layer + ".v"], src.nodes[layer].v_threshold)
        assert want[layer].sum() > 100, layer
        assert not report.flips, f"{layer}: {report}"


def simulate_nir(graph, x: np.ndarray, dt: float, reset: str = "v_reset") -> dict[str, np.ndarray]:
    """A float64 NumPy simulation of a NIR graph from NIR's node definitions, forward Euler at dt:
    CubaLIF tau_syn dI/dt = -I + w_in S, tau_mem dv/dt = v_leak - v + r I (the new I, as edgert
    documents), LIF tau dv/dt = v_leak - v + r I; spike when v > v_threshold, then v = v_reset in the
    same step (reset="subtract": v -= v_threshold instead); LI as LIF without spikes, its output v;
    Delay y(t) = x(t - delay). The edge that closes a loop carries its
    source's output of the previous step (NIR's one-step delay on a recurrent edge); at t=0 that is the
    source's output for no spikes (a recurrent Affine's bias, as in snntorch's RSynaptic). Returns
    every node's output over time [T, batch, ...], and each neuron's deciding membrane as "NAME.v"."""
    nodes, edges = graph.nodes, graph.edges
    back = _back_edges(graph)
    order = _topological(nodes, [e for e in edges if e not in back])
    state = {k: {} for k in nodes}
    prev = {k: None for k in nodes}  # outputs of the last step, read over back edges
    outs = {k: [] for k in nodes}
    for t in range(x.shape[0]):
        cur: dict[str, np.ndarray] = {}
        for k in order:
            n = nodes[k]
            kind = type(n).__name__
            if kind == "Input":
                cur[k] = x[t].astype(np.float64)
                continue
            i = (sum(cur[a] for a, b in edges if b == k and (a, b) not in back)
                 + sum(_previous(nodes[a], prev[a]) for a, b in back if b == k))
            s = state[k]
            if kind in ("Affine", "Linear"):
                y = i @ np.asarray(n.weight, np.float64).T + (n.bias if kind == "Affine" else 0.0)
            elif kind in ("LIF", "CubaLIF"):
                v = s.get("v", 0.0)
                if kind == "CubaLIF":
                    s["I"] = s.get("I", 0.0) + dt / n.tau_syn * (-s.get("I", 0.0) + n.w_in * i)
                    v = v + dt / n.tau_mem * (n.v_leak - v + n.r * s["I"])
                else:
                    v = v + dt / n.tau * (n.v_leak - v + n.r * i)
                y = (v > n.v_threshold).astype(np.float64)
                s["v_decide"] = v
                s["v"] = v - y * n.v_threshold if reset == "subtract" else np.where(y > 0, n.v_reset, v)
            elif kind == "LI":
                y = s["v"] = s.get("v", 0.0) + dt / n.tau * (n.v_leak - s.get("v", 0.0) + n.r * i)
            elif kind == "Delay":  # y(t) = x(t - delay): the input of delay/dt steps ago, zero before
                s.setdefault("seen", []).append(i)
                lag = int(round(float(np.ravel(n.delay)[0]) / dt))
                y = s["seen"][-1 - lag] if len(s["seen"]) > lag else np.zeros_like(i)
            elif kind == "Output":
                y = i
            else:
                raise NotImplementedError(kind)
            cur[k] = y
        for k in nodes:
            prev[k] = cur[k]
            outs[k].append(cur[k])
            if "v_decide" in state[k]:
                outs.setdefault(k + ".v", []).append(state[k]["v_decide"])
    return {k: np.stack(v) for k, v in outs.items()}


def _previous(node, out):
    if out is not None:
        return out
    return np.asarray(node.bias, np.float64) if type(node).__name__ == "Affine" else 0.0


def _back_edges(graph) -> set:
    """Edges that close a loop: those into a node still on the depth-first path from the Input."""
    succ = {k: [b for a, b in graph.edges if a == k] for k in graph.nodes}
    back, done, path = set(), set(), []

    def visit(u):
        path.append(u)
        for v in succ[u]:
            if v in path:
                back.add((u, v))
            elif v not in done:
                visit(v)
        path.pop()
        done.add(u)

    visit(next(k for k, n in graph.nodes.items() if type(n).__name__ == "Input"))
    return back


def _topological(nodes, edges) -> list[str]:
    order, todo = [], list(nodes)
    while todo:
        k = next(k for k in todo if all(a in order for a, b in edges if b == k))
        order.append(k)
        todo.remove(k)
    return order
