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
from edgert.runtime.parity import parity_report

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


def test_recurrent_graph_and_missing_dt_are_clear_errors():
    with pytest.raises(EdgertError, match="recurrent NIR graphs"):
        from_nir(DATA / "braille_noDelay_bias_zero.nir", dt=1e-4)
    with pytest.raises(EdgertError, match="pass dt"):
        from_nir(DATA / "lif_norse.nir")
