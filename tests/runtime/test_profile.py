"""Profiler: tensor liveness, bytes moved, roofline latency, both energy models and fit verdicts,
each checked against hand-computed figures; estimates are never labelled as measurements."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.compile import build_artifact
from edgert.runtime.estimate import (COMPUTE_ONLY, LATENCY_LABEL, LATENCY_LABEL_KERNELS, MEMORY_AWARE,
                                     estimate_node, fit, interpolate, kernel_efficiency)
from edgert.runtime.profile import NodeCost, node_costs, peak_activation_bytes, profile_artifact
from edgert.targets import parse_target, target_files

F32 = "float32"


def residual_graph() -> ir.Graph:
    """x[N,4,8,8] -> relu a -> relu b -> add(a, b) -> flatten -> linear(256 -> 3)."""
    rng = np.random.default_rng(0)
    return ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 4, 8, 8), F32)),),
        nodes=(ir.Relu(name="r1", inputs=("x",), output="a"),
               ir.Relu(name="r2", inputs=("a",), output="b"),
               ir.Add(name="add", inputs=("a", "b"), output="c"),
               ir.Flatten(name="flat", inputs=("c",), output="f"),
               ir.Linear(name="fc", inputs=("f", "w"), output="y")),
        outputs=("y",),
        params={"w": rng.standard_normal((3, 256)).astype(np.float32)}).validate()


def test_peak_activation_from_liveness():
    g = residual_graph()
    t = 4 * 8 * 8 * 4  # bytes of one [1,4,8,8] float32 tensor
    # r1: x, a live (2t); r2: a, b (2t; x is dead); add: a, b, c (3t); flat: a view of c; fc: c, y
    assert peak_activation_bytes(g, 1) == (3 * t, "add")
    assert peak_activation_bytes(g, 5) == (15 * t, "add")


def test_bytes_moved_and_views():
    art = build_artifact(residual_graph(), "loihi")  # estimate only: no compile needed
    c = {n.name: n for n in node_costs(art, batch=2)}
    t = 2 * 256 * 4
    assert c["r1"].bytes_moved == 2 * t and c["add"].bytes_moved == 3 * t
    assert c["flat"].bytes_moved == 0  # a view moves nothing
    assert c["fc"].param_bytes == 3 * 256 * 4 and c["fc"].bytes_moved == t + 2 * 3 * 4 + 3 * 256 * 4
    assert c["fc"].ops == {"fp32_mac": 2 * 3 * 256}


BOARD = {"name": "toy", "description": "d", "arch": "toy",
         "cpu": {"cores": 4, "clock_hz": 1e9},
         "memory": {"ram_bytes": 10_000, "flash_bytes": 5_000, "sram_bytes": 1_000, "bandwidth_bytes_per_s": 1e9},
         "throughput": {"fp32_mac": 2, "elementwise": 1},
         "energy": {"fp32_mac_pj": 10, "elementwise_pj": 1, "sram_byte_pj": 2, "dram_byte_pj": 100}}


def test_roofline_takes_the_binding_roof():
    toy = parse_target(BOARD)
    busy = NodeCost("c", "conv2d", (1,), {"fp32_mac": 4000, "elementwise": 1000}, param_bytes=400, act_bytes=600)
    e = estimate_node(busy, toy)
    assert e.compute_s == pytest.approx(4000 / 2e9 + 1000 / 1e9)  # 3 us, one core
    assert e.memory_s == pytest.approx(1000 / 1e9)                 # 1 us
    assert e.latency_s == e.compute_s and e.bound == "compute"
    light = NodeCost("r", "relu", (1,), {"elementwise": 100}, param_bytes=0, act_bytes=800)
    assert estimate_node(light, toy).bound == "memory"
    assert estimate_node(light, toy).latency_s == pytest.approx(800e-9)


def test_energy_models_by_hand():
    toy = parse_target(BOARD)
    c = NodeCost("c", "conv2d", (1,), {"fp32_mac": 4000, "elementwise": 1000}, param_bytes=400, act_bytes=600)
    on = estimate_node(c, toy, acts_on_chip=True, params_on_chip=True)
    assert on.energy_compute_j == pytest.approx((4000 * 10 + 1000 * 1) * 1e-12)
    assert on.energy_memory_j == pytest.approx(on.energy_compute_j + 1000 * 2e-12)
    off = estimate_node(c, toy, acts_on_chip=True, params_on_chip=False)
    assert off.energy_memory_j == pytest.approx(on.energy_compute_j + (600 * 2 + 400 * 100) * 1e-12)


def test_neuromorphic_prices_neurons_and_refuses_macs():
    loihi = parse_target(dict(BOARD, throughput={"accumulate": 0.25, "elementwise": 0.1},
                              energy={"accumulate_pj": 23.6, "neuron_update_pj": 81, "elementwise_pj": 81,
                                      "sram_byte_pj": 0, "dram_byte_pj": 0}))
    lif = NodeCost("lif", "leaky", (2, 50), {"accumulate": 300, "elementwise": 400}, 0, 800)
    e = estimate_node(lif, loihi, stateful=True)
    assert e.energy_compute_j == pytest.approx((300 * 23.6 + 100 * 81) * 1e-12)  # 100 neurons updated
    conv = NodeCost("c", "conv2d", (1,), {"fp32_mac": 10}, 0, 8)
    e = estimate_node(conv, loihi)
    assert e.latency_s is None and "no fp32_mac units" in e.bound and e.energy_compute_j is None


def test_fit_verdicts():
    toy = parse_target(BOARD)
    ok = fit(toy, peak_act=4_000, param_bytes=6_000, artifact_bytes=5_000)
    assert ok["ram"]["fits"] and ok["flash"]["fits"]
    bad = fit(toy, peak_act=4_000, param_bytes=6_001, artifact_bytes=5_001)
    assert bad["ram"]["verdict"] == "does NOT fit" and not bad["flash"]["fits"]
    mcu = fit(parse_target(dict(BOARD, weights_in_flash=True)), 4_000, 6_000, 99_999)
    assert mcu["ram"]["need_bytes"] == 4_000 and mcu["flash"]["need_bytes"] == 6_000


def test_estimate_only_artifact_is_profiled_but_not_measured(tmp_path):
    path = build_artifact(residual_graph(), "loihi").save(tmp_path / "r.edgert")
    report = profile_artifact(path, targets=list(target_files()))
    assert report["total"]["latency_s"] is None
    assert all(n["latency_s"] is None and "not measured" in n["latency_label"] for n in report["nodes"])
    assert set(report["estimates"]) == set(target_files())
    for name, est in report["estimates"].items():
        latency = LATENCY_LABEL_KERNELS if name == "x86-host" else LATENCY_LABEL  # only the host has tables
        assert est["labels"] == {"latency": latency, "energy_compute": COMPUTE_ONLY, "energy_memory": MEMORY_AWARE}
        assert "measured" not in json.dumps(est["labels"])
        assert set(est["fit"]) == {"ram", "flash"}


def test_cli_profile_every_board(tmp_path):
    path = build_artifact(residual_graph(), "loihi").save(tmp_path / "r.edgert")
    out = subprocess.run([sys.executable, "-m", "edgert.cli", "profile", str(path), "--all-targets"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in target_files():
        assert f"{name}:" in out.stdout
    assert "estimated (roofline" in out.stdout and "compute-only" in out.stdout and "memory-aware" in out.stdout
    assert out.stdout.count("RAM:") == len(target_files()) and "not measured" in out.stdout


def test_kernel_overhead_is_charged_to_kernels_not_views():
    toy = parse_target(dict(BOARD, cpu={"cores": 1, "clock_hz": 1e9, "kernel_overhead_cycles": 1000}))
    view = NodeCost("flat", "flatten", (1,), {}, param_bytes=0, act_bytes=0)
    assert estimate_node(view, toy).latency_s == 0
    relu = NodeCost("r", "relu", (1,), {"elementwise": 100}, param_bytes=0, act_bytes=800)
    assert estimate_node(relu, toy).latency_s == pytest.approx(800e-9 + 1e-6)


def test_data_that_fits_in_cache_moves_at_cache_bandwidth():
    toy = parse_target(dict(BOARD, memory={**BOARD["memory"], "cache_bytes": 1_000,
                                           "cache_bandwidth_bytes_per_s": 1e10}))
    small = NodeCost("r", "relu", (1,), {"elementwise": 1}, param_bytes=0, act_bytes=800)
    big = NodeCost("r", "relu", (1,), {"elementwise": 1}, param_bytes=0, act_bytes=8_000)
    assert estimate_node(small, toy).memory_s == pytest.approx(800 / 1e10)
    assert estimate_node(big, toy).memory_s == pytest.approx(8_000 / 1e9)


def test_memory_roof_takes_the_smallest_level_that_holds_the_bytes():
    toy = parse_target(dict(BOARD, memory={**BOARD["memory"], "l1_bytes": 100, "l1_bandwidth_bytes_per_s": 1e11,
                                           "cache_bytes": 1_000, "cache_bandwidth_bytes_per_s": 1e10,
                                           "sram_bandwidth_bytes_per_s": 5e9}))  # sram_bytes 1_000 in BOARD
    def memory_s(nbytes):
        return estimate_node(NodeCost("r", "relu", (1,), {"elementwise": 1}, 0, nbytes), toy).memory_s

    assert memory_s(80) == pytest.approx(80 / 1e11)
    assert memory_s(800) == pytest.approx(800 / 1e10)  # past L1, inside the cache
    assert memory_s(8_000) == pytest.approx(8_000 / 1e9)  # past sram_bytes too: memory
    mid = parse_target(dict(BOARD, memory={**BOARD["memory"], "sram_bytes": 10_000, "sram_bandwidth_bytes_per_s": 5e9}))
    assert estimate_node(NodeCost("r", "relu", (1,), {"elementwise": 1}, 0, 8_000), mid).memory_s == pytest.approx(
        8_000 / 5e9)


def test_interpolate_is_piecewise_linear_and_flat_beyond_the_ends():
    curve = {2: 0.2, 4: 0.6, 8: 1.0}
    assert interpolate(curve, 3) == pytest.approx(0.4)
    assert interpolate(curve, 6) == pytest.approx(0.8)
    assert interpolate(curve, 4) == pytest.approx(0.6)
    assert interpolate(curve, 1) == 0.2 and interpolate(curve, 12) == 1.0


KERNEL_BOARD = dict(BOARD, cpu={"cores": 1, "clock_hz": 1e9, "simd_bits": 256, "kernel_overhead_cycles": 100},
                    op_overhead_cycles={"max_pool2d": 500, "conv2d": 300},
                    op_efficiency={"max_pool2d": 0.25},
                    size_efficiency={"conv2d": {"4": 0.5, "8": 1.0}, "adaptive_avg_pool2d": {"4": 0.2, "16": 0.6}})


def test_kernel_tables_scale_compute_and_set_the_call_cost():
    toy = parse_target(KERNEL_BOARD)
    pool = NodeCost("p", "max_pool2d", (1, 8, 4, 4), {"elementwise": 1000}, 0, 10)
    e = estimate_node(pool, toy)
    assert e.compute_s == pytest.approx(1000 / 1e9 / 0.25)        # 4 us at a quarter of the elementwise rate
    assert e.latency_s == pytest.approx(4e-6 + 500e-9)           # + the pool's own call cost
    relu = NodeCost("r", "relu", (1, 8), {"elementwise": 1000}, 0, 10)
    assert estimate_node(relu, toy).latency_s == pytest.approx(1e-6 + 100e-9)  # no entry: the board's figures

    def conv(cg, og, width):
        return NodeCost("c", "conv2d", (1, og, 4, width), {"fp32_mac": 4000}, 0, 10, conv_shape=(cg, og, width))

    # 8 lanes of fp32 in 256 bits; width 6 -> a tile of 6 columns, halfway between 4 (0.5) and 8 (1.0)
    assert kernel_efficiency(conv(16, 32, 6), toy) == pytest.approx(0.75)
    assert estimate_node(conv(16, 32, 6), toy).compute_s == pytest.approx(4000 / 2e9 / 0.75)
    assert kernel_efficiency(conv(16, 32, 32), toy) == pytest.approx(1.0)   # tiles of 8
    assert kernel_efficiency(conv(16, 32, 4), toy) == pytest.approx(0.5)
    assert kernel_efficiency(conv(1, 32, 4), toy) == pytest.approx(0.5)  # one input channel: the same tile
    assert kernel_efficiency(conv(1, 1, 4), toy) == 1.0     # depthwise: vectorized over columns instead
    assert kernel_efficiency(conv(16, 12, 4), toy) == 1.0   # 12 output channels do not fill vectors of 8
    assert kernel_efficiency(conv(16, 32, 4), parse_target(BOARD)) == 1.0  # a board without tables

    def global_pool(h):
        return NodeCost("g", "adaptive_avg_pool2d", (1, 64, 1, 1), {"elementwise": 64 * h * h}, 0, 10)

    assert kernel_efficiency(global_pool(3), toy) == pytest.approx(0.2 + 0.4 * 5 / 12)  # window of 9 elements
    assert kernel_efficiency(global_pool(8), toy) == pytest.approx(0.6)  # beyond the curve: its last point


def test_fused_kernel_prices_each_node_at_its_own_efficiency():
    toy = parse_target(KERNEL_BOARD)
    c = NodeCost("c", "conv2d", (1, 32, 4, 4), {"fp32_mac": 4000}, 0, 10, conv_shape=(16, 32, 4))
    r = NodeCost("r", "relu", (1, 32, 4, 4), {"elementwise": 512}, 0, 10)
    fused = NodeCost("c+r", "conv2d", c.output_shape, {"fp32_mac": 4000, "elementwise": 512}, 0, 20,
                     conv_shape=c.conv_shape, parts=(c, r))
    e = estimate_node(fused, toy)
    assert e.compute_s == pytest.approx(4000 / 2e9 / 0.5 + 512 / 1e9)  # the ReLU is not slowed by the conv's tile
    assert e.latency_s == pytest.approx(e.compute_s + 300e-9)
