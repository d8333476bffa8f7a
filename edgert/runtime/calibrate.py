"""Calibrate the roofline on this host: measure throughput per op kind and how edgert's own kernels
fare against it, then compare predicted and measured latency layer by layer (``edgert profile
--calibrate [ARTIFACT]``, ``python -m tools.bench calibrate``).

Everything is measured on small synthetic kernels compiled by edgert's TVM backend for x86-host,
each timed alone by TVM's time evaluator as the least of ROUNDS interleaved rounds x ``repeat``
timings (another process on a shared core only ever adds time), never on the layers the comparison
scores:

- ``op_overhead_cycles``: per TVM op, the time of its smallest instance (a 2x2 map, one output
  column...): almost all fixed call cost;
- per op, instances of several sizes whose data stays in the 32 KB L1 (bigger data is the bandwidth
  roofs' business), and the slope of their time less the call cost (weighted by 1/t, so small and
  large count alike) against x: for relu x = its elements, giving the ``elementwise`` rate; for 3x3
  convolutions with bias and ReLU, 8 output columns (one register tile per row) and 8 to 64
  channels, x = MACs, giving the ``fp32_mac`` rate; for linear, add and max/avg pooling x = the
  roofline compute time at those rates, giving ``1 / op_efficiency`` (a max pool reads with a
  stride and reaches a fraction of the elementwise rate);
- ``size_efficiency`` (edgert.targets.SIZES): one instance per size, its roofline compute time over
  its time less the call cost. Convolutions 32 -> 32 on maps 8 rows high and 1 to 12 columns wide
  (one register tile of that many columns per row): with fewer columns the tile has fewer
  independent FMA chains to hide their latency. Global average pools of 1x1 to 8x8 and 16x16
  windows: LLVM unrolls and vectorizes a window of up to 16 elements whole. ReLU on 2,048 floats
  in rows of 1 to 64: the elementwise schedule vectorizes a row whole, so short rows idle lanes.

Bandwidth: adds of two tensors of 2K floats (24 KB moved, inside L1), 16K (192 KB, inside L2), 256K
(3 MB, inside L3) and 4M floats (48 MB, past the caches). int8_mac, binary_mac, shift_add and
accumulate: small Numba loops (the backend of those op families).

Each layer of an artifact is then predicted with these figures (edgert.runtime.estimate: roofline,
kernel efficiency, the call cost of the layer's main op; a fused kernel is one layer) and compared
with the measured kernel time.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from edgert import ir
from edgert.runtime.estimate import estimate_node, kernel_efficiency
from edgert.runtime.profile import NodeCost, count_ops
from edgert.targets import MAX_EFFICIENCY, Target, load_target

F32 = "float32"
ROUNDS = 5


def profile_interleaved(runs: list[tuple], repeat: int) -> list[list[tuple[str, float]]]:
    """Per (engine, inputs): seconds per kernel, the least over ROUNDS rounds through all of them in
    turn, each the least of ``repeat`` timings. Interleaved, so a busy spell on the shared cores (a
    process on the other hyperthread slows every kernel alike) hits one round of each rather than
    every round of one; the scored layers run in the same rounds as the synthetic kernels."""
    best: list = [None] * len(runs)
    for _ in range(ROUNDS):
        for i, (engine, xs) in enumerate(runs):
            prof = engine.profile(*xs, repeat=repeat, best=True)
            best[i] = prof if best[i] is None else [(k, min(s, b)) for (k, s), (_, b) in zip(prof, best[i])]
    return best


def random_inputs(engine, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(batch if d is None else d for d in spec.shape)).astype(spec.dtype)
            for _, spec in engine.inputs]


class _Instance:
    """A one-kernel synthetic graph: its main node (first), input and op counts."""

    def __init__(self, shape: tuple[int, ...], nodes: list[ir.Node], params: dict | None = None):
        self.graph = ir.Graph(inputs=(("x", ir.TensorSpec((None, *shape), F32)),), nodes=tuple(nodes),
                              outputs=(nodes[-1].output,), params=params or {}).validate()
        self.x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        specs = self.graph.infer_specs()
        main = nodes[0]
        self.op = main.op
        self.cost = NodeCost(main.name, main.op, (), count_ops(main, [specs[i] for i in main.inputs],
                                                                 specs[main.output], 1), 0)


def _conv(ci: int, co: int, h: int, w: int) -> _Instance:
    """3x3, padding 1, bias and a fused ReLU, as convolution layers usually are."""
    rng = np.random.default_rng(0)
    return _Instance((ci, h, w), [ir.Conv2d(name="k", inputs=("x", "w", "b"), output="y", padding=(1, 1, 1, 1)),
                                  ir.Relu(name="r", inputs=("y",), output="z")],
                     {"w": rng.standard_normal((co, ci, 3, 3)).astype(np.float32), "b": np.ones(co, np.float32)})


def _linear(k: int, n: int) -> _Instance:
    rng = np.random.default_rng(0)
    return _Instance((k,), [ir.Linear(name="k", inputs=("x", "w", "b"), output="y")],
                     {"w": rng.standard_normal((n, k)).astype(np.float32), "b": np.ones(n, np.float32)})


def _unary(op: type, shape: tuple[int, ...]) -> _Instance:
    return _Instance(shape, [op(name="k", inputs=("x",), output="y")])


def _add(shape: tuple[int, ...]) -> _Instance:
    w = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    return _Instance(shape, [ir.Add(name="k", inputs=("x", "w"), output="y")], {"w": w})


# Synthetic instances per op (none is a layer the comparison scores): the smallest, whose time is
# (almost) all call cost, and a spread of sizes whose data stays in the 32 KB L1 (larger data is
# the bandwidth roofs' business). The elementwise and fp32_mac rates come first: the other ops'
# efficiencies are relative to them.
L1_MAPS = ((4, 4, 4), (8, 8, 8), (4, 16, 16), (16, 16, 16))
TINY: dict[str, Callable[[], _Instance]] = {
    "relu": lambda: _unary(ir.Relu, (1, 2, 2)),
    "conv2d": lambda: _conv(2, 8, 1, 1),
    "linear": lambda: _linear(16, 1),
    "add": lambda: _add((1, 2, 2)),
    "max_pool2d": lambda: _unary(ir.MaxPool2d, (1, 2, 2)),
    "avg_pool2d": lambda: _unary(ir.AvgPool2d, (1, 2, 2)),
    "adaptive_avg_pool2d": lambda: _unary(ir.AdaptiveAvgPool2d, (1, 2, 2)),
}
INSTANCES: dict[str, Callable[[], list[_Instance]]] = {
    "relu": lambda: [_unary(ir.Relu, s) for s in ((8, 8, 8), (4, 16, 16), (8, 16, 16), (16, 16, 16))],  # full vectors
    "conv2d": lambda: [_conv(ci, co, h, 8) for ci, co, h in ((8, 8, 4), (16, 16, 8), (32, 32, 8), (32, 32, 16),
                                                              (64, 64, 16))],
    "linear": lambda: [_linear(k, n) for k, n in ((16, 8), (256, 8), (32, 64), (128, 32), (512, 16), (64, 128))],
    "add": lambda: [_add(s) for s in L1_MAPS[:3] + ((8, 16, 16),)],
    "max_pool2d": lambda: [_unary(ir.MaxPool2d, s) for s in L1_MAPS[1:] + ((64, 8, 8), (8, 32, 32))],  # 2x2
    "avg_pool2d": lambda: [_unary(ir.AvgPool2d, s) for s in L1_MAPS[1:] + ((64, 8, 8), (8, 32, 32))],
}
# Curves over the size that decides how an op's kernel vectorizes (edgert.targets.SIZES): one
# instance per size, at 32 -> 32 channels (conv) and 128 channels (global pool).
CURVES: dict[str, Callable[[], list[tuple[int, _Instance]]]] = {
    # on maps up to 12 columns wide one register tile covers a row (cpu_tiles.conv_tile_columns)
    "conv2d": lambda: [(w, _conv(32, 32, 8, w)) for w in range(1, 13)],
    "adaptive_avg_pool2d": lambda: [(h * h, _unary(ir.AdaptiveAvgPool2d, (128, h, h))) for h in (1, 2, 3, 4, 5, 6, 8)]
    + [(256, _unary(ir.AdaptiveAvgPool2d, (32, 16, 16)))],
    "relu": lambda: [(w, _unary(ir.Relu, (8, 256 // w, w))) for w in (1, 2, 4, 8, 16, 32, 64)],  # 2,048 floats
}


def slope_through(x: np.ndarray, t: np.ndarray, t0: float) -> float:
    """Least-squares slope of t - t0 against x (a line through (0, t0)), weighted by 1/t so small and
    large instances count alike (relative errors)."""
    w2 = 1 / t ** 2
    return float(np.sum(w2 * x * (t - t0)) / np.sum(w2 * x * x))


def _compute_s(c: _Instance, thr: dict, clock: float) -> float:
    """The roofline compute time of an instance at the rates measured so far."""
    return sum(v / (thr[k] * clock) for k, v in c.cost.ops.items())


BANDWIDTH = (("l1_bandwidth_bytes_per_s", 1 << 11, "24 KB moved, inside the 32 KB L1"),
             ("cache_bandwidth_bytes_per_s", 1 << 14, "192 KB moved, inside the 512 KB L2"),
             ("sram_bandwidth_bytes_per_s", 1 << 18, "3 MB moved, inside the 32 MB L3"),
             ("bandwidth_bytes_per_s", 1 << 22, "48 MB moved, past the caches"))


def measure_kernels(repeat: int, clock: float, out: dict, also: list[tuple] = ()) -> list:
    """Fill out's throughput (elementwise, fp32_mac), the kernel tables and the bandwidths, with how
    each was made. Every instance is timed in one interleaved batch, with the (engine, inputs) in
    ``also``, whose kernel times it returns."""
    from edgert.compilers.compile import build_artifact
    from edgert.runtime.engine import Engine

    thr, how = out["throughput"], out["how"]
    tiny = {op: make() for op, make in TINY.items()}
    lines = {op: make() for op, make in INSTANCES.items()}
    curves = {op: make() for op, make in CURVES.items()}
    adds = [_add((n,)) for _, n, _ in BANDWIDTH]
    batch = [*tiny.values(), *(c for cs in lines.values() for c in cs),
             *(c for cs in curves.values() for _, c in cs), *adds]
    profiles = profile_interleaved([(Engine(build_artifact(c.graph, "x86-host")), (c.x,)) for c in batch]
                                   + list(also), repeat)
    times = iter(sum(s for _, s in p) for p in profiles[:len(batch)])
    call = {op: next(times) for op in tiny}
    line_t = {op: np.array([next(times) for _ in cs]) for op, cs in lines.items()}
    curve_t = {op: [next(times) for _ in cs] for op, cs in curves.items()}
    add_t = [next(times) for _ in adds]

    efficiency, points = {}, {}
    for op, cases in lines.items():  # relu and conv2d first: the others are relative to their rates
        ts = line_t[op]
        if op == "relu":
            xs = [c.cost.ops["elementwise"] for c in cases]
        elif op == "conv2d":
            xs = [c.cost.ops["fp32_mac"] for c in cases]
        else:
            xs = [_compute_s(c, thr, clock) for c in cases]
        slope = slope_through(np.array(xs, float), ts, call[op])
        points[op] = ", ".join(f"{t * 1e6:.2f}" for t in ts)
        if op == "relu":
            thr["elementwise"] = 1 / (slope * clock)
        elif op == "conv2d":
            thr["fp32_mac"] = 1 / (slope * clock)
        else:
            efficiency[op] = min(1 / slope, MAX_EFFICIENCY)
    how["elementwise"] = (f"TVM relu on maps of 512..4,096 floats (in L1), rows of 8 or 16 ({points['relu']} us): "
                          "slope of time less the relu call cost vs size")
    how["fp32_mac"] = (f"TVM 3x3 conv+bias+ReLU, 8 columns, 8..64 channels ({points['conv2d']} us): slope of "
                       "time less the conv call cost vs MACs")
    how["op_overhead_cycles"] = "per op: its smallest instance (" + ", ".join(
        f"{op} {t * 1e6:.2f} us" for op, t in call.items()) + ")"
    how["op_efficiency"] = "per op: 1 / slope of time less the call cost vs roofline compute time (" + "; ".join(
        f"{op}: {points[op]} us" for op in efficiency) + ")"

    sizes, size_how = {}, []
    for op, cases in curves.items():
        sizes[op] = {size: min(_compute_s(c, thr, clock) / max(t - call[op], 1e-9), MAX_EFFICIENCY)
                     for (size, c), t in zip(cases, curve_t[op])}
        size_how.append(f"{op} ({', '.join(f'{size}: {t * 1e6:.2f}' for (size, _), t in zip(cases, curve_t[op]))} us)")
    how["size_efficiency"] = ("per size: roofline compute time over time less the call cost; "
                              + "; ".join(size_how))
    out["op_overhead_cycles"] = {op: t * clock for op, t in call.items()}
    out["op_efficiency"] = efficiency
    out["size_efficiency"] = sizes

    # the fixed cost of a kernel of any other op: that of the plainest kernel, relu
    out["kernel_overhead_cycles"] = call["relu"] * clock
    how["kernel_overhead_cycles"] = f"the relu call cost, {call['relu'] * 1e6:.2f} us (for ops without their own)"
    for (key, n, where), s in zip(BANDWIDTH, add_t):
        out[key] = 3 * 4 * n / max(s - call["add"], 1e-9)
        how[key] = f"TVM add of two {n:,}-float tensors ({where}) in {s * 1e6:.2f} us, less the add call cost"
    return profiles[len(batch):]


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


def measure_host(repeat: int = 20, clock_hz: float | None = None, artifacts=(), batch: int = 1) -> dict:
    """Measured throughput per op kind (ops per cycle, one core), the kernel tables and bandwidth;
    with ``artifacts`` (paths), also their kernel times ("layer_times", one list per artifact),
    measured in the same interleaved rounds."""
    from edgert.artifact import Artifact
    from edgert.runtime.engine import Engine

    clock = clock_hz or load_target("x86-host").cpu["clock_hz"]
    rng = np.random.default_rng(0)
    out: dict = {"clock_hz": clock, "throughput": {}, "how": {}}
    engines = [Engine(Artifact.read(a)) for a in artifacts]
    out["layer_times"] = measure_kernels(repeat, clock, out, [(e, random_inputs(e, batch)) for e in engines])

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
    """The x86-host board with its throughput, bandwidth, call costs and kernel tables replaced by
    measurements."""
    base = load_target("x86-host")
    return replace(base, throughput={**base.throughput, **measured["throughput"]},
                   cpu={**base.cpu, "kernel_overhead_cycles": measured["kernel_overhead_cycles"]},
                   memory={**base.memory, "bandwidth_bytes_per_s": measured["bandwidth_bytes_per_s"],
                           "cache_bandwidth_bytes_per_s": measured["cache_bandwidth_bytes_per_s"],
                           "sram_bandwidth_bytes_per_s": measured["sram_bandwidth_bytes_per_s"],
                           "l1_bandwidth_bytes_per_s": measured["l1_bandwidth_bytes_per_s"]},
                   op_overhead_cycles=measured["op_overhead_cycles"], op_efficiency=measured["op_efficiency"],
                   size_efficiency=measured["size_efficiency"])


def kernel_cost(nodes: list[str], costs: dict, by_name: dict, specs: dict, batch: int, params_of) -> NodeCost:
    """One fused kernel as one roofline unit: the nodes' ops and parameters, but only the bytes that
    cross the kernel's boundary (its inputs from outside and its last output); intermediates stay in
    registers. Its op and shape are those of its main node (the one with the most operations)."""
    from edgert.runtime.profile import _nbytes

    made = {by_name[n].output for n in nodes}
    ops: dict[str, int] = {}
    for n in nodes:
        for k, v in costs[n].ops.items():
            ops[k] = ops.get(k, 0) + v
    outside = {i for n in nodes for i in by_name[n].inputs if i not in made and i not in params_of}
    act = sum(_nbytes(specs[i], batch) for i in outside) + _nbytes(specs[by_name[nodes[-1]].output], batch)
    params = sum(costs[n].param_bytes for n in nodes)
    main = costs[max(nodes, key=lambda n: sum(costs[n].ops.values()))]
    return NodeCost("+".join(nodes), main.op, main.output_shape, ops, params, act, conv_shape=main.conv_shape,
                    parts=tuple(costs[n] for n in nodes))


def compare_layers(artifact_path, target: Target, batch: int = 1, repeat: int = 20,
                   kernel_times: list | None = None) -> list[dict]:
    """Per kernel (a layer; fused nodes together): predicted vs measured seconds here.

    The prediction is edgert.runtime.estimate's for the kernel as one unit on ``target``: roofline
    time over the kernel efficiency of its main op, plus that op's call cost. The measurement is
    ``kernel_times`` (from measure_host) or, without them, ROUNDS profiles here.
    """
    from edgert.artifact import Artifact
    from edgert.runtime.engine import Engine
    from edgert.runtime.estimate import call_overhead_s
    from edgert.runtime.profile import node_costs

    artifact = Artifact.read(artifact_path)
    engine = Engine(artifact)
    costs = {c.name: c for c in node_costs(artifact, batch)}
    g = artifact.graph
    by_name = {n.name: n for n in g.nodes}
    specs = g.infer_specs()
    members = engine.kernel_nodes()
    if kernel_times is None:
        kernel_times = profile_interleaved([(engine, random_inputs(engine, batch))], repeat)[0]
    rows = []
    for kernel, measured in kernel_times:
        nodes = [n for n in members.get(kernel, []) if n in costs]
        if not nodes:
            continue
        cost = kernel_cost(nodes, costs, by_name, specs, batch, g.params)
        e = estimate_node(cost, target)
        if e.latency_s is None:
            continue
        fixed = call_overhead_s(cost, target)
        rows.append({"kernel": kernel, "nodes": nodes, "main_op": cost.op, "predicted_s": e.latency_s,
                     "measured_s": measured, "error": e.latency_s / measured - 1,
                     "roofline_s": e.latency_s - fixed, "overhead_s": fixed, "bound": e.bound,
                     "efficiency": kernel_efficiency(cost, target)})
    return rows


def calibrate_host(artifact=None, batch: int = 1, repeat: int = 20) -> dict:
    """Measure this host; with an artifact, also compare its layers (JSON-ready).

    The roofline is for one core, so TVM runs one thread here (TVM_NUM_THREADS=1 unless already set;
    it only takes effect when TVM's thread pool has not started yet in this process).
    """
    import os

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    measured = measure_host(repeat, artifacts=[artifact] if artifact is not None else [], batch=batch)
    layer_times = measured.pop("layer_times")
    base = load_target("x86-host")
    report = {"date": time.strftime("%Y-%m-%d"), "measured": measured,
              "board_file": {"throughput": base.throughput,
                             "bandwidth_bytes_per_s": base.memory.get("bandwidth_bytes_per_s"),
                             "cache_bandwidth_bytes_per_s": base.memory.get("cache_bandwidth_bytes_per_s"),
                             "sram_bandwidth_bytes_per_s": base.memory.get("sram_bandwidth_bytes_per_s"),
                             "l1_bandwidth_bytes_per_s": base.memory.get("l1_bandwidth_bytes_per_s"),
                             "kernel_overhead_cycles": base.cpu.get("kernel_overhead_cycles"),
                             "op_overhead_cycles": base.op_overhead_cycles, "op_efficiency": base.op_efficiency,
                             "size_efficiency": base.size_efficiency}}
    if artifact is not None:
        rows = compare_layers(artifact, calibrated_host(measured), batch, repeat, layer_times[0])
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
    for key, label in (("l1_bandwidth_bytes_per_s", "L1 bandwidth B/s"), ("cache_bandwidth_bytes_per_s", "cache bandwidth B/s"),
                       ("sram_bandwidth_bytes_per_s", "L3 bandwidth B/s")):
        t.add_row(label, f"{m[key]:.3g}", str(report["board_file"].get(key)), m["how"][key])
    t.add_row("kernel overhead cycles", f"{m['kernel_overhead_cycles']:.0f}",
              str(report["board_file"]["kernel_overhead_cycles"] or "-"), m["how"]["kernel_overhead_cycles"])
    bf = report["board_file"]
    for table, fmt in (("op_overhead_cycles", "{:.0f}"), ("op_efficiency", "{:.2f}")):
        t.add_row(table, ", ".join(f"{k} {fmt.format(v)}" for k, v in m[table].items()),
                  ", ".join(f"{k} {fmt.format(v)}" for k, v in bf[table].items()) or "-", m["how"][table])
    for op, curve in m["size_efficiency"].items():
        t.add_row(f"size_efficiency {op}", ", ".join(f"{k}: {v:.2f}" for k, v in curve.items()),
                  ", ".join(f"{k}: {v:.2f}" for k, v in bf["size_efficiency"].get(op, {}).items()) or "-",
                  m["how"]["size_efficiency"] if op == next(iter(m["size_efficiency"])) else "")
    console.print(t)
    if "layers" not in report:
        return
    t = Table("layer (kernel)", "nodes", "kernel efficiency", "predicted us (roofline + call)", "measured us",
              "error", "bound",
              title=f"{report['artifact']}: predicted vs measured per layer on this machine")
    for r in report["layers"]:
        colour = "green" if abs(r["error"]) <= 0.30 else "red"
        t.add_row(r["kernel"], str(len(r["nodes"])), f"{r['efficiency']:.2f}",
                  f"{r['predicted_s'] * 1e6:.2f} ({r['roofline_s'] * 1e6:.2f} + {r['overhead_s'] * 1e6:.2f})",
                  f"{r['measured_s'] * 1e6:.2f}",
                  f"[{colour}]{r['error'] * 100:+.0f}%[/]", r["bound"])
    console.print(t)
    console.print(f"{report['within_30pct']} of {report['n_layers']} layers within ±30%")
