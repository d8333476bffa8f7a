"""The C spiking kernels against the NumPy reference, spike for spike over many time steps: every reset
mode, reset_delay both ways, graded spikes, per-neuron and shared parameters, the fused Linear's event
and dense paths, both RLeaky recurrences, RSynaptic, the leaky integrator and the delay, and the
digits SNNs.

Each graph puts many neuron nodes side by side (one host build per test); a spike that differs is
reported with its membrane's distance from the threshold in the reference."""

from __future__ import annotations

import functools
import subprocess
from importlib import resources
from typing import NamedTuple

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c import emit
from edgert.compilers.backends.c.emit import c_array, emit_c
from edgert.compilers.backends.c.host import SANITIZE
from edgert.compilers.backends.c.ops_spiking import event_limit
from edgert.ops.reference import run_graph_ref
from edgert.ops.spiking.nodes import Delay, Leaky, LeakyIntegrator, LinearLeaky, RLeaky, RSynaptic, Synaptic
from tests.compilers.backends.c.harness import needs_cc, reference, run_c

F = np.float32
THRESHOLD_INPUT = {"leaky": 2, "synaptic": 3, "rleaky": 2, "rsynaptic": 3, "linear_leaky": 4}

VARIANTS = [dict(reset=r, reset_delay=d) for r in ("subtract", "zero", "none") for d in (True, False)] + [
    dict(reset="subtract", reset_delay=False, instant_reset="zero"),
    dict(reset="zero", reset_delay=False, instant_reset="subtract"),
    dict(reset="none", reset_delay=False, instant_reset="subtract"),
    dict(graded=0.5), dict(graded=-1.75, reset_delay=False), dict(graded=2.5, reset="zero")]


class Flip(NamedTuple):
    step: int
    distance: float  # |reference membrane - threshold|
    text: str


def _flips(graph: ir.Graph, feeds: dict, got: list[np.ndarray]) -> list[Flip]:
    """Every spike of the graph outputs (neuron outputs) that differs from the reference, with the
    reference membrane's distance from the threshold after that step (after the instant reset when
    reset_delay is off)."""
    nodes = {n.output: n for n in graph.nodes}
    steps = next(iter(feeds.values())).shape[0]
    state: dict = {}
    want, mems = [], []
    for t in range(steps):
        want.append(run_graph_ref(graph, {k: v[t:t + 1] for k, v in feeds.items()}, state))
        mems.append({o: state[nodes[o].name]["mem"].reshape(-1).copy() for o in graph.outputs})
    out = []
    for k, o in enumerate(graph.outputs):
        n = nodes[o]
        thr = np.broadcast_to(graph.params[n.inputs[THRESHOLD_INPUT[n.op]]].reshape(-1), mems[0][o].shape)
        ref = np.concatenate([w[k] for w in want])
        c, ref = got[k].reshape(steps, -1), ref.reshape(steps, -1)
        for t, i in zip(*np.nonzero(c != ref)):
            d = float(abs(mems[t][o][i] - thr[i]))
            out.append(Flip(int(t), d, f"{n.op} {n.name!r} step {t} neuron {i}: C {c[t, i]} reference "
                                       f"{ref[t, i]}, |mem - threshold| = {d:.3g}"))
    return sorted(out)


def _check(graph, feeds, tmp_path) -> None:
    got = run_c(graph, feeds, tmp_path)
    for name, spikes in zip(graph.outputs, got):  # every node both spikes and stays silent
        assert 0 < np.count_nonzero(spikes) < spikes.size, name
    flips = _flips(graph, feeds, got)
    assert not flips, _report(flips)


def _report(flips: list[Flip]) -> str:
    return f"{len(flips)} spikes differ:\n" + "\n".join(f.text for f in flips[:20])


def _graph(x_spec, nodes, params) -> ir.Graph:
    return ir.Graph((("x", ir.TensorSpec(x_spec)),), tuple(nodes), tuple(n.output for n in nodes),
                    params).validate()


def _neuron_params(rng, shape, shared: bool, names):
    """Per-neuron values (beta in [0, 1] with its ends, thresholds around 1, a few on a dyadic grid so
    membranes land exactly on them), or one value broadcast to the feature shape."""
    out = {}
    for name in names:
        if shared:
            v = {"beta": 0.9, "alpha": 0.8, "threshold": 1.0, "V": 0.3}[name]
            out[name] = np.full(shape, v, F)
            continue
        if name in ("beta", "alpha"):
            a = rng.uniform(0.0, 1.0, shape).astype(F)
            a.flat[:2] = (0.0, 1.0)
        elif name == "threshold":
            a = rng.uniform(0.3, 1.5, shape).astype(F)
            a.flat[2:4] = (1.0, 0.75)
        else:
            a = rng.uniform(-0.8, 0.8, shape).astype(F)
        out[name] = a
    return out


def _neurons(cls, x_shape, names, rng, extra=None):
    """One node per variant, per-neuron and shared parameters, all reading x; (nodes, params)."""
    nodes, params = [], {}
    for k, kw in enumerate(VARIANTS):
        for shared in (False, True):
            tag = f"{cls.op}{k}{'s' if shared else 'p'}"
            p = _neuron_params(rng, x_shape, shared, names)
            ins = ["x"]
            for name in names:
                params[f"{tag}.{name}"] = p[name]
                ins.append(f"{tag}.{name}")
            more = extra(tag, params, ins) if extra else {}
            nodes.append(cls(name=tag, inputs=tuple(ins), output=f"{tag}.y", **kw, **more))
    return nodes, params


def _currents(rng, steps, shape):
    """Float currents around the thresholds; the first feature row on a 1/8 grid (exact ties)."""
    x = (rng.standard_normal((steps,) + shape) * 0.7 + 0.35).astype(F)
    x.reshape(steps, -1)[:, :4] = rng.integers(-4, 10, (steps, 4)) / 8
    return x


def leaky_case():
    rng = np.random.default_rng(10)
    nodes, params = _neurons(Leaky, (3, 7), ("beta", "threshold"), rng)
    return _graph((None, 3, 7), nodes, params), {"x": _currents(rng, 60, (3, 7))}


def synaptic_case():
    rng = np.random.default_rng(11)
    nodes, params = _neurons(Synaptic, (9,), ("alpha", "beta", "threshold"), rng)
    return _graph((None, 9), nodes, params), {"x": _currents(rng, 60, (9,)) * F(0.4)}


def rleaky_one_to_one_case():
    rng = np.random.default_rng(12)
    nodes, params = _neurons(RLeaky, (2, 5), ("beta", "threshold", "V"), rng)
    return _graph((None, 2, 5), nodes, params), {"x": _currents(rng, 60, (2, 5))}


def _recurrent(rng, f, more):
    def add(tag, params, ins):  # a Linear (W [out, in], b) over the previous spikes
        params[f"{tag}.W"] = (rng.standard_normal((f, f)) * 0.4).astype(F)
        params[f"{tag}.b"] = (rng.standard_normal(f) * 0.05).astype(F)
        ins += [f"{tag}.W", f"{tag}.b"]
        return more
    return add


def rleaky_all_to_all_case():
    rng = np.random.default_rng(13)
    f = 13
    nodes, params = _neurons(RLeaky, (f,), ("beta", "threshold"), rng, _recurrent(rng, f, {"all_to_all": True}))
    return _graph((None, f), nodes, params), {"x": _currents(rng, 60, (f,)) * F(0.6)}


def rsynaptic_case():
    rng = np.random.default_rng(14)
    f = 11
    nodes, params = _neurons(RSynaptic, (f,), ("alpha", "beta", "threshold"), rng, _recurrent(rng, f, {}))
    return _graph((None, f), nodes, params), {"x": _currents(rng, 60, (f,)) * F(0.4)}


@needs_cc
def test_leaky_every_variant(tmp_path):
    g, feeds = leaky_case()
    src = emit_c(g).files["model.c"]
    assert "w_leaky0s_beta[1]" in src and "w_leaky0p_beta[21]" in src  # shared: one value in flash
    _check(g, feeds, tmp_path)


@needs_cc
def test_synaptic_every_variant(tmp_path):
    _check(*synaptic_case(), tmp_path)


@needs_cc
def test_rleaky_one_to_one(tmp_path):
    _check(*rleaky_one_to_one_case(), tmp_path)


@needs_cc
def test_rleaky_all_to_all(tmp_path):
    _check(*rleaky_all_to_all_case(), tmp_path)


@needs_cc
def test_rsynaptic(tmp_path):
    _check(*rsynaptic_case(), tmp_path)


@needs_cc
def test_leaky_integrator_and_delay(tmp_path):
    """x -> Delay(3) -> LeakyIntegrator (per-neuron) and x -> Delay(1) -> LeakyIntegrator (shared): the
    same bits as the reference at every step."""
    rng = np.random.default_rng(15)
    params = {"p.beta": rng.uniform(0, 1, 7).astype(F), "p.scale": rng.uniform(-2, 2, 7).astype(F),
              "s.beta": np.full(7, 0.9, F), "s.scale": np.full(7, 0.3, F)}
    nodes = [Delay(name="d3", inputs=("x",), output="d3", steps=3),
             LeakyIntegrator(name="p", inputs=("d3", "p.beta", "p.scale"), output="p"),
             Delay(name="d1", inputs=("x",), output="d1", steps=1),
             LeakyIntegrator(name="s", inputs=("d1", "s.beta", "s.scale"), output="s")]
    g = ir.Graph((("x", ir.TensorSpec((None, 7))),), tuple(nodes), ("p", "s", "d3"), params).validate()
    feeds = {"x": _currents(rng, 30, (7,))}
    got, want = run_c(g, feeds, tmp_path), reference(g, feeds)
    np.testing.assert_array_equal(want[2][3:], feeds["x"][:-3])  # the reference delays by 3 steps
    for name, c, ref in zip(g.outputs, got, want):
        np.testing.assert_array_equal(c.reshape(ref.shape), ref, err_msg=name)


def _sparse_steps(rng, steps, k, counts):
    """Inputs [steps, k], step t with counts[t % len] nonzero entries, values 1 (spikes), a graded
    spike value or floats, in turn."""
    x = np.zeros((steps, k), F)
    for t in range(steps):
        idx = rng.choice(k, counts[t % len(counts)], replace=False)
        kind = (t // len(counts)) % 3
        x[t, idx] = (1.0, 0.5, None)[kind] or rng.standard_normal(len(idx)).astype(F)
    return x


def linear_leaky_case():
    """Fused Linear + Leaky nodes side by side, steps with few to all inputs nonzero, spikes, graded
    spikes and floats; event_below 0 (always dense) among them, so both paths run."""
    rng = np.random.default_rng(14)
    k = 53
    assert event_limit(0.15, k) == k + 1 and event_limit(0.0, k) == 0  # event path, unless "always dense"
    counts = [0, 1, 3, 7, 8, 9, 20, 40, k]
    x = _sparse_steps(rng, 81, k, counts)
    nodes, params = [], {}
    for j, (kw, below) in enumerate(zip(VARIANTS + VARIANTS[:4], [0.15] * 12 + [0.0, 0.5, 1.0, 2.0])):
        o = (11, 29)[j % 2]
        tag = f"ll{j}"
        params.update({f"{tag}.wt": (rng.standard_normal((k, o)) * 0.35).astype(F),
                       f"{tag}.b": (rng.standard_normal(o) * 0.1).astype(F),
                       **{f"{tag}.{n}": v for n, v in _neuron_params(rng, (o,), j % 3 == 2,
                                                                    ("beta", "threshold")).items()}})
        nodes.append(LinearLeaky(name=tag, inputs=(
            "x", f"{tag}.wt", f"{tag}.b", f"{tag}.beta", f"{tag}.threshold"), output=f"{tag}.y",
            event_below=below, **kw))
    return _graph((None, k), nodes, params), {"x": x}


@needs_cc
def test_linear_leaky_event_and_dense_paths(tmp_path):
    _check(*linear_leaky_case(), tmp_path)


_CURRENT_MAIN = r"""
#include <stdio.h>
#include "kernels/spiking.h"
%s
int main(void) {
  static float cur[N_CASES][O], lo[O];
  int c, limit;
  for (limit = 0; limit <= 1; limit++) {  /* 0: the dense path, 1: the event path */
    for (c = 0; c < N_CASES; c++) ek_linear_current(X + c * K, K, WT, BIAS, O, limit ? K + 1 : 0, cur[c], lo);
    fwrite(cur, sizeof cur, 1, stdout);
  }
  return 0;
}
"""


def _current_program(tmp_path, x, wt, bias, defines=()) -> np.ndarray:
    """ek_linear_current on each row of x by both paths, compiled alone: [2 (dense, event), cases, o]."""
    n, k = x.shape
    o = wt.shape[1]
    decl = (f"#define N_CASES {n}\n#define K {k}\n#define O {o}\n"
            f"static const float X[N_CASES * K] = {c_array(x)};\n"
            f"static const float WT[K * O] = {c_array(wt)};\nstatic const float BIAS[O] = {c_array(bias)};")
    (tmp_path / "kernels").mkdir(exist_ok=True)
    for rel in ("kernels/spiking.h", "kernels/spiking.c"):
        (tmp_path / rel).write_text(resources.files("edgert.compilers.backends.c").joinpath(rel).read_text())
    (tmp_path / "main.c").write_text(_CURRENT_MAIN % decl)
    exe = tmp_path / "current"
    cmd = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", *defines, "-I",
           str(tmp_path), str(tmp_path / "main.c"), str(tmp_path / "kernels/spiking.c"), "-o", str(exe),
           "-lm", *SANITIZE]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    return np.frombuffer(out, F).reshape(2, n, o)


@needs_cc
def test_current_paths_round_like_the_float64_reference(tmp_path):
    """Both paths of the fused Linear's sum give the reference's float32 (a float64 sum rounded once)
    exactly, and the float32 variant the plain sum in row order; long sums with cancellation."""
    rng = np.random.default_rng(15)
    k, o = 301, 37
    x = _sparse_steps(rng, 24, k, [3, 30, 150, 301])
    x[-1] = rng.standard_normal(k).astype(F) * 1e3  # dense floats, large terms that cancel
    wt = rng.standard_normal((k, o)).astype(F) * F(0.1)
    bias = rng.standard_normal(o).astype(F)
    want = (x.astype(np.float64) @ wt.astype(np.float64) + bias).astype(F)
    got = _current_program(tmp_path, x, wt, bias)
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)
    naive = np.tile(bias, (len(x), 1))
    for i in range(k):  # bias first, then row by row: the float32 sums' order
        naive = np.where(x[:, i:i + 1] != 0, naive + x[:, i:i + 1] * wt[i], naive).astype(F)
    (tmp_path / "f32").mkdir()
    fast = _current_program(tmp_path / "f32", x, wt, bias, ["-DEK_SPIKING_FLOAT32_SUMS"])
    np.testing.assert_array_equal(fast[1], naive)
    np.testing.assert_array_equal(fast[0], naive)  # the dense path adds x * w = 0 too: no change
    assert np.count_nonzero(naive != want) > want.size // 2  # the case for the float pairs


# ---- the digits SNNs: the optimized graph, every neuron layer's spikes compared ----------------------

@functools.lru_cache(maxsize=None)
def _digits_graph(kind: str) -> ir.Graph:
    import torch

    from edgert.compilers.compile import import_model, optimize
    from tools.models.digits_snn import conv_snn, fc_snn

    torch.manual_seed(0)
    net = (fc_snn if kind == "fc" else conv_snn)().eval()
    with torch.no_grad():  # untrained: larger weights so the output layer spikes
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(2.0)
    g = optimize(import_model(net, np.zeros((1, 1, 8, 8), F)))
    layers = tuple(n.output for n in g.nodes if n.op in THRESHOLD_INPUT)
    return ir.Graph(g.inputs, g.nodes, layers, g.params).validate()


@functools.lru_cache(maxsize=None)
def _digits_steps(samples: int = 8) -> np.ndarray:
    from tools.models.digits_cnn import digits_split
    from tools.models.digits_snn import rate_code

    x = rate_code(digits_split()[2][:samples], seed=7)  # [T, N, 1, 8, 8]
    return x.transpose(1, 0, 2, 3, 4).reshape(-1, 1, 8, 8)  # the samples one after another


def _digits_check(kind, tmp_path) -> list[Flip]:
    g = _digits_graph(kind)
    x = {"x": _digits_steps()}
    got = run_c(g, x, tmp_path)
    spikes = [int(np.count_nonzero(a)) for a in got]
    assert all(s > 20 for s in spikes), spikes  # every layer active
    return _flips(g, x, got)


@needs_cc
def test_digits_fc_snn_spike_for_spike(tmp_path):
    flips = _digits_check("fc", tmp_path)
    assert not flips, _report(flips)


@needs_cc
def test_digits_conv_snn_spike_for_spike(tmp_path):
    missing = {"conv2d", "max_pool2d"} - set(emit.emitters())
    if missing:
        pytest.skip(f"the C backend has no {sorted(missing)} yet")
    flips = _digits_check("conv", tmp_path)
    # the float conv's sums are float32 (the reference's float64): a flip must sit at the threshold
    assert len(flips) <= 2 and all(f.distance < 1e-5 for f in flips), _report(flips)
