"""Calibrate the roofline on this host: measure throughput per op kind with small kernels, then
compare predicted and measured latency layer by layer (``edgert profile --calibrate [ARTIFACT]``).

Throughput per op kind (operations per cycle on one core, at the clock in targets/x86-host.toml):

- kernel_overhead_cycles and elementwise: ReLU kernels over 8 to 65,536 floats compiled by edgert's
  TVM backend and timed by TVM's time evaluator; a least-squares line through (size, time) gives the
  fixed cost of one kernel call (intercept) and the elementwise rate (slope).
- fp32_mac: a 3x3 convolution (32 -> 32 channels, 16x16), same path, less one kernel overhead: what
  edgert's own float code reaches, not the core's peak.
- bandwidth: an add of two 4M-float tensors (48 MB moved, past the caches), same path; cache
  bandwidth: the same add on 16K floats (192 KB moved, inside the 512 KB L2).
- int8_mac, binary_mac, shift_add, accumulate: small Numba loops (the backend of those op families):
  an int8 dot product, XNOR-popcount over uint64 words, a shift-and-add, and a gather-accumulate.

Each layer of an artifact is then predicted with these figures (roofline per node, plus one kernel
overhead per kernel: a fused kernel is one layer) and compared with the measured kernel time.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from edgert import ir
from edgert.runtime.estimate import estimate_node
from edgert.runtime.profile import NodeCost
from edgert.targets import Target, load_target

F32 = "float32"


def _tvm_kernel_seconds(graph: ir.Graph, x: np.ndarray, repeat: int) -> float:
    """Median seconds of the graph's kernels (one TVM library on this host), summed."""
    from edgert.compilers.compile import build_artifact
    from edgert.runtime.engine import Engine

    engine = Engine(build_artifact(graph, "x86-host"))
    # the least of a few profiles: the other process on a shared core only ever adds time
    return min(sum(s for _, s in engine.profile(x, repeat=repeat)) for _ in range(ROUNDS))


ROUNDS = 3


def _tiny(op: str) -> tuple[ir.Graph, np.ndarray]:
    """The smallest instance of an op kind: its time is (almost) all kernel-call overhead."""
    x4 = ir.TensorSpec((None, 1, 2, 2), F32)
    one = np.ones((1, 1, 2, 2), np.float32)
    if op == "conv2d":  # 3x3 with padding and a fused ReLU, as convolution layers usually are
        return ir.Graph(inputs=(("x", x4),),
                        nodes=(ir.Conv2d(name="k", inputs=("x", "w", "b"), output="y", padding=(1, 1, 1, 1)),
                               ir.Relu(name="r", inputs=("y",), output="z")),
                        outputs=("z",), params={"w": np.ones((8, 1, 3, 3), np.float32),
                                                "b": np.ones(8, np.float32)}), one
    if op == "linear":
        return ir.Graph(inputs=(("x", ir.TensorSpec((None, 8), F32)),),
                        nodes=(ir.Linear(name="k", inputs=("x", "w", "b"), output="y"),), outputs=("y",),
                        params={"w": np.ones((8, 8), np.float32), "b": np.ones(8, np.float32)}), np.ones((1, 8), np.float32)
    if op == "add":
        return ir.Graph(inputs=(("x", x4),), nodes=(ir.Add(name="k", inputs=("x", "x"), output="y"),),
                        outputs=("y",)), one
    cls = {"max_pool2d": ir.MaxPool2d, "avg_pool2d": ir.AvgPool2d, "adaptive_avg_pool2d": ir.AdaptiveAvgPool2d,
           "relu": ir.Relu}[op]
    return ir.Graph(inputs=(("x", x4),), nodes=(cls(name="k", inputs=("x",), output="y"),), outputs=("y",)), one


OVERHEAD_OPS = ("conv2d", "linear", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "relu", "add")


def _unary(op: type, shape: tuple[int, ...]) -> ir.Graph:
    return ir.Graph(inputs=(("x", ir.TensorSpec((None, *shape), F32)),),
                    nodes=(op(name="k", inputs=("x",), output="y"),), outputs=("y",))


def _time_numba(fn: Callable, args: tuple, repeat: int) -> float:
    fn(*args)  # compile
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _numba_kernels():
    import numba

    @numba.njit(cache=False, fastmath=True)
    def int8_dot(a, b, out):  # out[i] = sum_k a[i, k] * b[k], int32 accumulation
        for i in range(a.shape[0]):
            acc = np.int32(0)
            for k in range(a.shape[1]):
                acc += np.int32(a[i, k]) * np.int32(b[k])
            out[i] = acc

    @numba.njit(cache=False)
    def xnor_popcount(a, b, out):  # out[i] = popcount(~(a[i] ^ b)) over 64-bit words
        for i in range(a.shape[0]):
            acc = 0
            for k in range(a.shape[1]):
                v = ~(a[i, k] ^ b[k])
                v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
                v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
                v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
                acc += (v * np.uint64(0x0101010101010101)) >> np.uint64(56)
            out[i] = acc

    @numba.njit(cache=False, fastmath=True)
    def shift_add(x, shifts, signs, out):  # out[i] = sum_k sign * (x[k] << shift)
        for i in range(shifts.shape[0]):
            acc = np.int32(0)
            for k in range(shifts.shape[1]):
                acc += signs[i, k] * (x[k] << shifts[i, k])
            out[i] = acc

    @numba.njit(cache=False, fastmath=True)
    def accumulate(w, idx, out):  # event-driven: add the weight rows of the active inputs
        for j in range(idx.shape[0]):
            row = w[idx[j]]
            for i in range(row.shape[0]):
                out[i] += row[i]

    return int8_dot, xnor_popcount, shift_add, accumulate


def measure_host(repeat: int = 20, clock_hz: float | None = None) -> dict:
    """Measured throughput per op kind (ops per cycle, one core), bandwidth and kernel overhead."""
    clock = clock_hz or load_target("x86-host").cpu["clock_hz"]
    rng = np.random.default_rng(0)
    out: dict = {"clock_hz": clock, "throughput": {}, "how": {}}

    # ReLU at several sizes: a line t = overhead + n / rate gives the fixed cost of one kernel call
    # and the elementwise rate (sizes stay inside L2, so the line is not a bandwidth measurement)
    sizes = (8, 1024, 4096, 16384, 65536)
    ts = [_tvm_kernel_seconds(_unary(ir.Relu, (n,)), np.ones((1, n), np.float32), repeat) for n in sizes]
    slope, overhead = np.polyfit(np.array(sizes, float), np.array(ts), 1)
    overhead = max(float(overhead), 0.0)
    out["kernel_overhead_cycles"] = overhead * clock
    out["throughput"]["elementwise"] = 1 / (slope * clock)
    out["how"]["kernel_overhead_cycles"] = (f"intercept of TVM relu times over {', '.join(map(str, sizes))} floats "
                                            f"({', '.join(f'{t * 1e6:.1f}' for t in ts)} us): {overhead * 1e6:.2f} us")
    out["how"]["elementwise"] = "slope of the same line"

    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    conv = ir.Graph(inputs=(("x", ir.TensorSpec((None, 32, 16, 16), F32)),),
                    nodes=(ir.Conv2d(name="k", inputs=("x", "w"), output="y", padding=(1, 1, 1, 1)),),
                    outputs=("y",), params={"w": w})
    s = _tvm_kernel_seconds(conv, rng.standard_normal((1, 32, 16, 16)).astype(np.float32), repeat)
    macs = 32 * 16 * 16 * 32 * 9
    out["throughput"]["fp32_mac"] = macs / max(s - overhead, 1e-9) / clock
    out["how"]["fp32_mac"] = (f"TVM conv 3x3 32->32 at 16x16 ({macs:,} MACs) in {s * 1e6:.1f} us, "
                              "less one kernel overhead")

    out["overhead_s_by_op"] = {op: _tvm_kernel_seconds(*_tiny(op), repeat) for op in OVERHEAD_OPS}
    out["how"]["overhead_s_by_op"] = "the smallest instance of each op kind, one TVM kernel each"

    n = 1 << 22
    add = ir.Graph(inputs=(("x", ir.TensorSpec((None, n), F32)),),
                   nodes=(ir.Add(name="k", inputs=("x", "w"), output="y"),), outputs=("y",),
                   params={"w": rng.standard_normal((1, n)).astype(np.float32)})
    s = _tvm_kernel_seconds(add, rng.standard_normal((1, n)).astype(np.float32), max(3, repeat // 4))
    out["bandwidth_bytes_per_s"] = 3 * 4 * n / s
    out["how"]["bandwidth_bytes_per_s"] = f"TVM add of two {n:,}-float tensors (48 MB moved) in {s * 1e3:.2f} ms"

    n = 1 << 14
    add = ir.Graph(inputs=(("x", ir.TensorSpec((None, n), F32)),),
                   nodes=(ir.Add(name="k", inputs=("x", "w"), output="y"),), outputs=("y",),
                   params={"w": rng.standard_normal((1, n)).astype(np.float32)})
    s = _tvm_kernel_seconds(add, rng.standard_normal((1, n)).astype(np.float32), repeat)
    out["cache_bandwidth_bytes_per_s"] = 3 * 4 * n / max(s - overhead, 1e-9)
    out["how"]["cache_bandwidth_bytes_per_s"] = (f"TVM add of two {n:,}-float tensors (192 KB moved, inside L2) "
                                                 f"in {s * 1e6:.2f} us, less one kernel overhead")

    int8_dot, xnor, shift, acc = _numba_kernels()
    m, k = 64, 1024
    a8, b8 = rng.integers(-128, 128, (m, k), dtype=np.int8), rng.integers(-128, 128, k, dtype=np.int8)
    s = _time_numba(int8_dot, (a8, b8, np.empty(m, np.int32)), repeat)
    out["throughput"]["int8_mac"] = m * k / s / clock
    out["how"]["int8_mac"] = f"Numba int8 dot products {m}x{k} in {s * 1e6:.1f} us"
    words = 64
    a64 = rng.integers(0, 2**63, (m, words), dtype=np.uint64)
    s = _time_numba(xnor, (a64, a64[0].copy(), np.empty(m, np.int64)), repeat)
    out["throughput"]["binary_mac"] = m * words * 64 / s / clock
    out["how"]["binary_mac"] = f"Numba XNOR-popcount {m}x{words * 64} bits in {s * 1e6:.1f} us"
    xi = rng.integers(-1000, 1000, k, dtype=np.int32)
    sh = rng.integers(0, 8, (m, k), dtype=np.int32)
    sg = rng.choice(np.array([-1, 1], np.int32), (m, k))
    s = _time_numba(shift, (xi, sh, sg, np.empty(m, np.int32)), repeat)
    out["throughput"]["shift_add"] = m * k / s / clock
    out["how"]["shift_add"] = f"Numba shift-add {m}x{k} in {s * 1e6:.1f} us"
    wrow = rng.standard_normal((700, 256)).astype(np.float32)
    idx = rng.choice(700, 128, replace=False).astype(np.int64)
    s = _time_numba(acc, (wrow, idx, np.zeros(256, np.float32)), repeat)
    out["throughput"]["accumulate"] = 128 * 256 / s / clock
    out["how"]["accumulate"] = f"Numba event accumulate 128 spikes x 256 synapses in {s * 1e6:.1f} us"
    return out


def calibrated_host(measured: dict) -> Target:
    """The x86-host board with its throughput, bandwidth and kernel overhead replaced by measurements."""
    base = load_target("x86-host")
    return replace(base, throughput={**base.throughput, **measured["throughput"]},
                   cpu={**base.cpu, "kernel_overhead_cycles": measured["kernel_overhead_cycles"]},
                   memory={**base.memory, "bandwidth_bytes_per_s": measured["bandwidth_bytes_per_s"],
                           "cache_bandwidth_bytes_per_s": measured["cache_bandwidth_bytes_per_s"]})


def kernel_cost(nodes: list[str], costs: dict, by_name: dict, specs: dict, batch: int, params_of) -> "NodeCost":
    """One fused kernel as one roofline unit: the nodes' ops and parameters, but only the bytes that
    cross the kernel's boundary (its inputs from outside and its last output); intermediates stay in
    registers."""
    from edgert.runtime.profile import _nbytes

    made = {by_name[n].output for n in nodes}
    ops: dict[str, int] = {}
    for n in nodes:
        for k, v in costs[n].ops.items():
            ops[k] = ops.get(k, 0) + v
    outside = {i for n in nodes for i in by_name[n].inputs if i not in made and i not in params_of}
    act = sum(_nbytes(specs[i], batch) for i in outside) + _nbytes(specs[by_name[nodes[-1]].output], batch)
    params = sum(costs[n].param_bytes for n in nodes)
    return NodeCost("+".join(nodes), by_name[nodes[0]].op, (), ops, params, act)


def compare_layers(artifact_path, target: Target, batch: int = 1, repeat: int = 20,
                   overhead_by_op: dict[str, float] | None = None) -> list[dict]:
    """Per kernel (a layer; fused nodes together): predicted (roofline) vs measured seconds here.

    The prediction is the nodes' roofline times plus one kernel-call overhead: the board's single
    ``kernel_overhead_cycles``, or with ``overhead_by_op`` the measured overhead of the kernel's main
    op kind (the node with the most operations), since TVM's kernels differ in fixed cost (a kernel
    with parallel loops pays for the thread-pool launch even on one thread).
    """
    from edgert.artifact import Artifact
    from edgert.runtime.engine import Engine
    from edgert.runtime.profile import node_costs

    artifact = Artifact.read(artifact_path)
    engine = Engine(artifact)
    costs = {c.name: c for c in node_costs(artifact, batch)}
    g = artifact.graph
    ops_of = {n.name: n.op for n in g.nodes}
    by_name = {n.name: n for n in g.nodes}
    specs = g.infer_specs()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(tuple(batch if d is None else d for d in spec.shape)).astype(spec.dtype)
          for _, spec in engine.inputs]
    members = engine.kernel_nodes()
    overhead = target.cpu.get("kernel_overhead_cycles", 0) / target.cpu["clock_hz"]
    no_overhead = replace(target, cpu={**target.cpu, "kernel_overhead_cycles": 0})
    runs = [engine.profile(*xs, repeat=repeat) for _ in range(ROUNDS)]
    rows = []
    for i, (kernel, _) in enumerate(runs[0]):
        measured = min(r[i][1] for r in runs)
        nodes = [n for n in members.get(kernel, []) if n in costs]
        if not nodes:
            continue
        e = estimate_node(kernel_cost(nodes, costs, by_name, specs, batch, g.params), no_overhead)
        if e.latency_s is None:
            continue
        main = max(nodes, key=lambda n: sum(costs[n].ops.values()))
        fixed = (overhead_by_op or {}).get(ops_of[main], overhead)
        predicted = e.latency_s + fixed
        rows.append({"kernel": kernel, "nodes": nodes, "main_op": ops_of[main], "predicted_s": predicted,
                     "measured_s": measured, "error": predicted / measured - 1,
                     "roofline_s": e.latency_s, "overhead_s": fixed, "bound": e.bound})
    return rows


def calibrate_host(artifact=None, batch: int = 1, repeat: int = 20) -> dict:
    """Measure this host; with an artifact, also compare its layers (JSON-ready).

    The roofline is for one core, so TVM runs one thread here (TVM_NUM_THREADS=1 unless already set;
    it only takes effect when TVM's thread pool has not started yet in this process).
    """
    import os

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    measured = measure_host(repeat)
    base = load_target("x86-host")
    report = {"date": time.strftime("%Y-%m-%d"), "measured": measured,
              "board_file": {"throughput": base.throughput,
                             "bandwidth_bytes_per_s": base.memory.get("bandwidth_bytes_per_s"),
                             "cache_bandwidth_bytes_per_s": base.memory.get("cache_bandwidth_bytes_per_s"),
                             "kernel_overhead_cycles": base.cpu.get("kernel_overhead_cycles")}}
    if artifact is not None:
        rows = compare_layers(artifact, calibrated_host(measured), batch, repeat, measured["overhead_s_by_op"])
        within = sum(abs(r["error"]) <= 0.30 for r in rows)
        report.update(artifact=str(artifact), layers=rows, within_30pct=within, n_layers=len(rows))
    return report


def _plain(o):
    """numpy scalars (counts and times can be numpy ints and floats) as plain JSON numbers."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def print_calibration(report: dict, console, as_json: bool = False) -> None:
    """Rich tables (or JSON) for a calibrate_host report."""
    from rich.table import Table

    if as_json:
        print(json.dumps(report, indent=1, default=_plain))
        return
    m = report["measured"]
    t = Table("op kind", "measured ops/cycle (1 core)", "board file", "how (measured on this machine)",
              title=f"x86-host calibration, {report['date']}, at {m['clock_hz'] / 1e9:.3g} GHz")
    for k, v in m["throughput"].items():
        t.add_row(k, f"{v:.3g}", str(report["board_file"]["throughput"].get(k, "-")), m["how"][k])
    t.add_row("bandwidth B/s", f"{m['bandwidth_bytes_per_s']:.3g}",
              str(report["board_file"]["bandwidth_bytes_per_s"]), m["how"]["bandwidth_bytes_per_s"])
    t.add_row("cache bandwidth B/s", f"{m['cache_bandwidth_bytes_per_s']:.3g}",
              str(report["board_file"].get("cache_bandwidth_bytes_per_s")), m["how"]["cache_bandwidth_bytes_per_s"])
    t.add_row("kernel overhead cycles", f"{m['kernel_overhead_cycles']:.0f}",
              str(report["board_file"]["kernel_overhead_cycles"] or "-"), m["how"]["kernel_overhead_cycles"])
    t.add_row("overhead by op kind", ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in m["overhead_s_by_op"].items()),
              "-", m["how"]["overhead_s_by_op"])
    console.print(t)
    if "layers" not in report:
        return
    t = Table("layer (kernel)", "nodes", "predicted us (roofline + overhead)", "measured us", "error", "bound",
              title=f"{report['artifact']}: predicted vs measured per layer on this machine")
    for r in report["layers"]:
        colour = "green" if abs(r["error"]) <= 0.30 else "red"
        t.add_row(r["kernel"], str(len(r["nodes"])),
                  f"{r['predicted_s'] * 1e6:.2f} ({r['roofline_s'] * 1e6:.2f} + {r['overhead_s'] * 1e6:.2f})",
                  f"{r['measured_s'] * 1e6:.2f}",
                  f"[{colour}]{r['error'] * 100:+.0f}%[/]", r["bound"])
    console.print(t)
    console.print(f"{report['within_30pct']} of {report['n_layers']} layers within ±30%")
