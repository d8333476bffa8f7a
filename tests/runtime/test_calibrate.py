"""Calibration: a fused kernel is one roofline unit, and the host comparison covers every layer."""

import json

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.compile import build_artifact
from edgert.runtime.calibrate import kernel_cost, slope_through
from edgert.runtime.profile import node_costs
from tests.runtime.test_profile import residual_graph
from tests.test_cli import edgert


def test_fused_kernel_moves_only_its_boundary_bytes():
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 4), "float32")),),
                 nodes=(ir.Linear(name="fc", inputs=("x", "w"), output="h"),
                        ir.Relu(name="r", inputs=("h",), output="y")),
                 outputs=("y",), params={"w": np.ones((3, 4), np.float32)})
    art = build_artifact(g, "loihi")  # estimate only: no compile needed
    costs = {c.name: c for c in node_costs(art, batch=2)}
    k = kernel_cost(["fc", "r"], costs, {n.name: n for n in g.nodes}, g.infer_specs(), 2, g.params)
    assert k.ops == {"fp32_mac": 2 * 3 * 4, "elementwise": 2 * 3}
    assert k.param_bytes == 3 * 4 * 4
    assert k.act_bytes == 2 * 4 * 4 + 2 * 3 * 4  # x in, y out; h never leaves the kernel
    assert k.op == "linear" and [p.name for p in k.parts] == ["fc", "r"]  # priced node by node


def test_slope_through_the_measured_call_cost():
    x = np.array([1.0, 10.0, 100.0])
    assert slope_through(x, 0.5 + 2 * x, 0.5) == pytest.approx(2)
    # relative weighting: a 10% error on the largest instance moves the slope less than plain least squares
    t = 0.5 + 2 * x * np.array([1, 1, 1.1])
    plain = np.sum(x * (t - 0.5)) / np.sum(x * x)  # unweighted, through the same point: ~2.198
    assert 2 < slope_through(x, t, 0.5) < plain - 0.05


@pytest.mark.slow
def test_cli_calibrate_compares_every_layer(tmp_path):
    path = build_artifact(residual_graph(), "x86-host").save(tmp_path / "r.edgert")
    out = edgert("profile", path, "--calibrate", "--json", "--repeat", "5")
    report = json.loads(out.stdout)
    m = report["measured"]
    assert set(m["throughput"]) == {"fp32_mac", "int8_mac", "binary_mac", "shift_add", "accumulate", "elementwise"}
    assert all(v > 0 for v in m["throughput"].values()) and m["bandwidth_bytes_per_s"] > 0
    assert set(m["op_efficiency"]) == {"linear", "add", "max_pool2d", "avg_pool2d"}
    assert {int(k) for k in m["size_efficiency"]["conv2d"]} == set(range(1, 13)) and "relu" in m["op_overhead_cycles"]
    assert report["n_layers"] == len(report["layers"]) >= 2  # however TVM fuses, the linear stands alone
    covered = {n for r in report["layers"] for n in r["nodes"]}
    assert {"r1", "r2", "add", "fc"} <= covered  # every node is in some compared layer
    for r in report["layers"]:
        assert r["predicted_s"] > 0 and r["measured_s"] > 0
        assert r["error"] == pytest.approx(r["predicted_s"] / r["measured_s"] - 1)
