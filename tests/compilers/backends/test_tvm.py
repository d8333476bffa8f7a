"""TVM backend: every op kind against the NumPy reference, one compiled library per op family.

Compiling costs about a second, so each graph below batches several ops (with odd shapes,
asymmetric padding, dilation, groups, ceil_mode) and is compiled once per module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.tvm import compile_graph
from edgert.errors import InputError, TargetError, UnsupportedOpError
from edgert.ops.reference import run_graph_ref
from edgert.runtime.tvm_runner import TvmRunner

HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True, scope="module")
def strict_schedules():
    """A schedule that fails must fail the test, not silently fall back to slow loops (module scope,
    so it is in place before the module-scoped builds below)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGERT_TVM_STRICT_SCHEDULE", "1")
        yield


def _w(rng, *shape, fan_in=None):
    fan_in = fan_in or int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _x(rng, spec: ir.TensorSpec, batch: int) -> np.ndarray:
    return rng.standard_normal((batch,) + spec.shape[1:]).astype(np.float32)


def _check(graph: ir.Graph, runner: TvmRunner, batch: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    feeds = {name: _x(rng, spec, batch) for name, spec in graph.inputs}
    got = runner.run([feeds[name] for name, _ in graph.inputs])
    want = run_graph_ref(graph, feeds)
    assert len(got) == len(want) == len(graph.outputs)
    for name, g, w in zip(graph.outputs, got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, **TOL, err_msg=f"output {name!r}")


def _runner(build, graph: ir.Graph) -> TvmRunner:
    return TvmRunner(build.library, [graph.params[k] for k in build.param_names])


# ---- graphs -----------------------------------------------------------------------------------------

def conv_graph() -> ir.Graph:
    """Conv variants (packed, broadcast, depthwise, grouped) with BN and every activation."""
    rng = np.random.default_rng(0)
    p = {
        "wa": _w(rng, 8, 3, 3, 3), "ba": _w(rng, 8, fan_in=1),
        "wb": _w(rng, 8, 1, 3, 3), "bb": _w(rng, 8, fan_in=1),
        "wc": _w(rng, 16, 4, 2, 3),
        "wd": _w(rng, 5, 3, 1, 1), "bd": _w(rng, 5, fan_in=1),
        "we": _w(rng, 8, 3, 3, 3), "wf": _w(rng, 3, 1, 1, 3),
        "g": (1 + 0.2 * rng.standard_normal(8)).astype(np.float32),
        "beta": (0.2 * rng.standard_normal(8)).astype(np.float32),
        "mean": (0.5 * rng.standard_normal(8)).astype(np.float32),
        "var": (0.5 + rng.random(8)).astype(np.float32),
    }
    nodes = (
        # asymmetric padding (top, left, bottom, right); 8 output channels -> packed weights
        ir.Conv2d(name="conv.a", inputs=("x", "wa", "ba"), output="a", padding=(1, 0, 2, 1)),
        ir.BatchNorm(name="bn", inputs=("a", "g", "beta", "mean", "var"), output="a_bn", eps=1e-3),
        ir.Relu(name="relu", inputs=("a_bn",), output="a_r"),
        # depthwise, dilation 2
        ir.Conv2d(name="conv.b", inputs=("a_r", "wb", "bb"), output="b", padding=2, dilation=2, groups=8),
        ir.Clip(name="relu6", inputs=("b",), output="b6", lo=0.0, hi=6.0),
        # grouped, non-square kernel, stride 2, no bias
        ir.Conv2d(name="conv.c", inputs=("b6", "wc"), output="c", stride=2, padding=(0, 1, 1, 1), groups=2),
        ir.Sigmoid(name="sig", inputs=("c",), output="c_s"),
        # 1x1 with an odd channel count (not packed), anisotropic stride
        ir.Conv2d(name="conv.d", inputs=("x", "wd", "bd"), output="d", stride=(2, 1)),
        ir.Tanh(name="tanh", inputs=("d",), output="d_t"),
        # output widths no tile size divides: 39 (packed weights), 37 (depthwise)
        ir.Conv2d(name="conv.e", inputs=("w", "we"), output="e", padding=(1, 1, 1, 3)),
        ir.Conv2d(name="conv.f", inputs=("w", "wf"), output="f", padding=(0, 1, 0, 1), groups=3),
    )
    return ir.Graph(inputs=(("x", ir.TensorSpec((None, 3, 11, 13))), ("w", ir.TensorSpec((None, 3, 4, 37)))),
                    nodes=nodes, outputs=("c_s", "d_t", "a_r", "e", "f"), params=p).validate()


def pool_graph() -> ir.Graph:
    """Every pooling corner: ceil_mode with padding, dropped last windows, divisors, adaptive."""
    x = ir.TensorSpec((None, 4, 13, 11))
    nodes = (
        ir.MaxPool2d(name="max.ceil", inputs=("x",), output="m1", kernel=3, stride=2, padding=1, ceil_mode=True),
        ir.MaxPool2d(name="max.dil", inputs=("x",), output="m2", kernel=2, stride=2, dilation=2, ceil_mode=True),
        ir.MaxPool2d(name="max.asym", inputs=("x",), output="m3", kernel=(2, 3), stride=(1, 2),
                     padding=(0, 1, 1, 0)),
        ir.AvgPool2d(name="avg.incl", inputs=("x",), output="v1", kernel=3, stride=2, padding=1,
                     ceil_mode=True, count_include_pad=True),
        ir.AvgPool2d(name="avg.excl", inputs=("x",), output="v2", kernel=3, stride=2, padding=1,
                     ceil_mode=True, count_include_pad=False),
        ir.AvgPool2d(name="avg.over", inputs=("x",), output="v3", kernel=2, stride=3, ceil_mode=True),
        ir.AdaptiveAvgPool2d(name="adapt.odd", inputs=("x",), output="a1", output_size=(5, 3)),
        ir.AdaptiveAvgPool2d(name="adapt.big", inputs=("x",), output="a2", output_size=(13, 4)),
        ir.AdaptiveAvgPool2d(name="gap", inputs=("x",), output="a3", output_size=1),
        # 5 -> PyTorch's rule drops the window that would start in the right padding: 3, not 4
        ir.MaxPool2d(name="max.drop", inputs=("y",), output="m4", kernel=2, stride=2, padding=1, ceil_mode=True),
        ir.AvgPool2d(name="avg.drop", inputs=("y",), output="v4", kernel=2, stride=2, padding=1, ceil_mode=True),
    )
    g = ir.Graph(inputs=(("x", x), ("y", ir.TensorSpec((None, 2, 5, 5)))), nodes=nodes,
                 outputs=("m1", "m2", "m3", "v1", "v2", "v3", "a1", "a2", "a3", "m4", "v4"))
    specs = g.infer_specs()
    assert specs["m4"].shape[2:] == (3, 3) and specs["v4"].shape[2:] == (3, 3)
    return g.validate()


def dense_graph() -> ir.Graph:
    """Linear (vectorized K and ragged K), softmax on two axes, flatten/reshape, add, concat."""
    rng = np.random.default_rng(0)
    p = {"w1": _w(rng, 7, 120), "b1": _w(rng, 7, fan_in=1), "w2": _w(rng, 3, 6),
         "shift": _w(rng, 3, fan_in=1)}
    nodes = (
        ir.Flatten(name="flat", inputs=("x",), output="f"),
        ir.Linear(name="fc1", inputs=("f", "w1", "b1"), output="h"),
        ir.Softmax(name="soft1", inputs=("h",), output="probs", axis=1),
        ir.Reshape(name="rows", inputs=("x",), output="r", shape=(20, -1)),
        ir.Linear(name="fc2", inputs=("r", "w2"), output="s"),  # over the last axis of a rank-3 input
        ir.Add(name="add.param", inputs=("s", "shift"), output="s2"),
        ir.Add(name="add.act", inputs=("s2", "s"), output="s3"),
        ir.Concat(name="cat", inputs=("s3", "s", "s2"), output="cat", axis=2),
        ir.Softmax(name="soft2", inputs=("cat",), output="cat_p", axis=2),
        ir.Concat(name="cat1", inputs=("r", "r"), output="rr", axis=1),
    )
    return ir.Graph(inputs=(("x", ir.TensorSpec((None, 4, 5, 6))),), nodes=nodes,
                    outputs=("probs", "cat_p", "rr"), params=p).validate()


def blocked_graph() -> ir.Graph:
    """A separable-conv chain that the lowering keeps channel-blocked between its convs."""
    rng = np.random.default_rng(3)
    p = {"w0": _w(rng, 16, 1, 3, 3), "b0": _w(rng, 16, fan_in=1),
         "w1": _w(rng, 16, 1, 3, 3), "b1": _w(rng, 16, fan_in=1),
         "w2": _w(rng, 16, 16, 1, 1), "b2": _w(rng, 16, fan_in=1),
         "w3": _w(rng, 16, 1, 4, 4), "w4": _w(rng, 16, 16, 1, 1), "w5": _w(rng, 8, 16, 1, 1)}
    nodes = (
        ir.Conv2d(name="stem", inputs=("x", "w0", "b0"), output="s", padding=1),  # one input channel
        ir.Hardswish(name="hs", inputs=("s",), output="s_h"),
        ir.Conv2d(name="dw", inputs=("s_h", "w1", "b1"), output="d", padding=2, dilation=2, groups=16),
        ir.Clip(name="relu6", inputs=("d",), output="d6", lo=0.0, hi=6.0),
        ir.Conv2d(name="pw", inputs=("d6", "w2", "b2"), output="p"),
        ir.Add(name="res", inputs=("p", "s_h"), output="r"),
        ir.Relu(name="relu", inputs=("r",), output="r_r"),
        # strided depthwise with a Keras-'same' style asymmetric pad, odd output width
        ir.Conv2d(name="dw2", inputs=("r_r", "w3"), output="e", stride=2, padding=(1, 1, 2, 2), groups=16),
        ir.Conv2d(name="pw2", inputs=("e", "w4"), output="f"),
        ir.Mean(name="gap", inputs=("f",), output="g", axes=(2, 3), keepdim=True),  # reads NCHW
        ir.Conv2d(name="pw3", inputs=("r_r", "w5"), output="o"),  # blocked in, an output: NCHW out
        ir.MaxPool2d(name="mp", inputs=("r_r",), output="m", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),
        ir.AvgPool2d(name="ap", inputs=("e",), output="a", kernel=(2, 2), stride=(2, 2), ceil_mode=True),
        ir.AdaptiveAvgPool2d(name="aap", inputs=("e",), output="aa", output_size=(2, 3)),
    )
    return ir.Graph(inputs=(("x", ir.TensorSpec((None, 1, 9, 25))),), nodes=nodes,
                    outputs=("g", "o", "m", "a", "aa"), params=p).validate()


def test_blocked_layout_covers_the_conv_chain_and_stops_at_other_ops():
    from edgert.compilers.backends.tvm_lower import blocked_values

    g = blocked_graph()
    packing = {"stem", "pw", "pw2", "pw3"}
    assert blocked_values(g, g.infer_specs(), packing, 8) == {"s", "s_h", "d", "d6", "p", "r", "r_r", "e"}
    assert blocked_values(g, g.infer_specs(), packing, None) == set()


def test_blocked_conv_chain_matches_reference():
    g = blocked_graph()
    b = compile_graph(g, HOST)
    assert set(b.packed_params) == {"w0", "w1", "w2", "w3", "w4", "w5"}  # the depthwise weights too
    for batch in (1, 3):
        _check(g, _runner(b, g), batch)


@pytest.fixture(scope="module")
def conv_build():
    g = conv_graph()
    return g, compile_graph(g, HOST)


@pytest.fixture(scope="module")
def pool_build():
    g = pool_graph()
    return g, compile_graph(g, HOST)


@pytest.fixture(scope="module")
def dense_build():
    g = dense_graph()
    return g, compile_graph(g, HOST)


# ---- correctness ------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3])
def test_conv_family_matches_reference(conv_build, batch):
    g, b = conv_build
    _check(g, _runner(b, g), batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_pools_match_reference(pool_build, batch):
    g, b = pool_build
    _check(g, _runner(b, g), batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_dense_and_shape_ops_match_reference(dense_build, batch):
    g, b = dense_build
    _check(g, _runner(b, g), batch)


def test_one_library_serves_batch_1_and_3(conv_build):
    g, b = conv_build
    r = _runner(b, g)
    for batch in (3, 1, 3):
        _check(g, r, batch, seed=batch)


def test_unaligned_and_readonly_inputs_are_copied(dense_build):
    g, b = dense_build
    r = _runner(b, g)
    rng = np.random.default_rng(5)
    raw = rng.standard_normal(2 * 120 + 1).astype(np.float32)
    x = raw[1:].reshape(2, 4, 5, 6)  # 4 bytes off a 64-byte boundary
    x.flags.writeable = False
    want = run_graph_ref(g, {"x": x})
    for got, w in zip(r.run([x]), want):
        np.testing.assert_allclose(got, w, **TOL)


def test_set_params_changes_outputs(conv_build):
    g, b = conv_build
    r = _runner(b, g)
    rng = np.random.default_rng(7)
    new = {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.1).astype(np.float32)
           for k, v in g.params.items()}
    new["var"] = np.abs(new["var"]) + 0.1
    g2 = dataclasses.replace(g, params=new)
    r.set_params([new[k] for k in b.param_names])
    _check(g2, r, batch=2)
    with pytest.raises(InputError, match="parameter 0 must be"):
        r.set_params([np.zeros((1,), np.float32)] + [new[k] for k in b.param_names[1:]])


def test_outputs_are_not_shared_with_params():
    """An output that is a parameter passed straight through must come back as a copy."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 3))),),
                 nodes=(ir.Linear(name="fc", inputs=("x", "w"), output="y"),),
                 outputs=("y", "w"), params={"w": w})
    b = compile_graph(g, HOST, pipeline="unfused")
    r = _runner(b, g)
    y, w_out = r.run([np.ones((1, 3), np.float32)])
    np.testing.assert_array_equal(y, [[3, 12]])
    w_out[:] = 0
    np.testing.assert_array_equal(r.run([np.ones((1, 3), np.float32)])[0], [[3, 12]])


def test_replayed_calls_hand_out_fresh_outputs(conv_build):
    """Small inputs replay the kernels of one recorded call on the same buffers: an output kept from
    one call must not change with the next, and every call must match the reference."""
    g, b = conv_build
    r = _runner(b, g)
    rng = np.random.default_rng(5)
    feeds = [{name: _x(rng, spec, 1) for name, spec in g.inputs} for _ in range(3)]
    got = [r.run([f[name] for name, _ in g.inputs]) for f in feeds]
    for f, outs in zip(feeds, got):
        for name, y, want in zip(g.outputs, outs, run_graph_ref(g, f)):
            np.testing.assert_allclose(y, want, **TOL, err_msg=f"output {name!r}")


# ---- kernels, names and profiling ------------------------------------------------------------------

def test_kernel_map_names_nodes_and_profile_uses_it(conv_build):
    g, b = conv_build
    names = {n.name for n in g.nodes}
    assert all(set(nodes) <= names for nodes in b.kernels.values())
    fused = [k for k, nodes in b.kernels.items() if len(nodes) > 1]
    assert fused and all(k.startswith("fused_") for k in fused)
    assert ["conv.a", "bn", "relu"] in b.kernels.values()  # conv -> bn -> relu is one kernel
    # weight packing kernels (run by transform_params at set_params time, never profiled)
    assert {k for k in b.kernels if k.endswith("__pack")} == {"conv_a__pack", "conv_c__pack", "conv_e__pack"}
    prof = _runner(b, g).profile([np.zeros((2, 3, 11, 13), np.float32), np.zeros((2, 3, 4, 37), np.float32)],
                                 repeat=3)
    assert prof and all(k in b.kernels and not k.endswith("__pack") and t > 0 for k, t in prof)
    covered = {n for k, _ in prof for n in b.kernels[k]}
    assert covered == names  # every node's work is inside some profiled kernel


def test_unfused_pipeline_gives_one_kernel_per_node(dense_build):
    g, _ = dense_build
    b = compile_graph(g, HOST, pipeline="unfused")
    assert all(len(v) == 1 for v in b.kernels.values())
    _check(g, _runner(b, g), batch=2)


def test_unsupported_ops_are_reported_together():
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Mystery(ir.Node):
        op: ClassVar[str] = "mystery"

    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 3))),),
                 nodes=(Mystery(name="m1", inputs=("x",), output="a"),
                        Mystery(name="m2", inputs=("a",), output="b")), outputs=("b",))
    with pytest.raises(UnsupportedOpError, match=r"mystery \('m1'\), mystery \('m2'\)"):
        compile_graph(g, HOST)


def test_missing_cross_compiler_is_a_target_error(dense_build):
    g, _ = dense_build
    with pytest.raises(TargetError, match="not on PATH"):
        compile_graph(g, {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, cross_compiler="no-such-g++")


# ---- the device side never loads torch -------------------------------------------------------------

def test_import_tvm_keeps_torch_out():
    code = ("import sys, edgert._tvm as t; t.import_tvm(); assert 'torch' not in sys.modules; "
            "import torch; assert torch.ones(2).sum().item() == 2")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_runner_runs_prebuilt_library_without_torch(dense_build, tmp_path):
    g, b = dense_build
    (tmp_path / "lib.bin").write_bytes(b.library)
    np.savez(tmp_path / "params.npz", *[g.params[k] for k in b.param_names])
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from edgert.runtime.tvm_runner import TvmRunner
        d = {str(tmp_path)!r}
        ps = np.load(d + "/params.npz")
        r = TvmRunner(open(d + "/lib.bin", "rb").read(), [ps[f"arr_{{i}}"] for i in range(len(ps.files))])
        outs = r.run([np.load(d + "/x.npy")])
        kernels = r.profile([np.load(d + "/x.npy")], repeat=2)
        np.savez(d + "/out.npz", *outs)
        print(json.dumps({{"torch": [m for m in sys.modules if m == "torch" or m.startswith("torch.")],
                          "kernels": [k for k, _ in kernels]}}))
    """)
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["torch"] == []
    assert report["kernels"]
    outs = np.load(tmp_path / "out.npz")
    for i, w in enumerate(run_graph_ref(g, {"x": x})):
        np.testing.assert_allclose(outs[f"arr_{i}"], w, **TOL)
