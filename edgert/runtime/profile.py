"""Per-node cost of an artifact: op counts, bytes moved, parameter bytes, peak activation memory,
latency measured on this machine, and (edgert.runtime.estimate) per-target latency and energy."""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from edgert import ir
from edgert.artifact import Artifact


# Operation kinds the profiler counts; target files price each kind (ops per cycle, energy per op).
OP_KINDS = ("fp32_mac", "int8_mac", "binary_mac", "shift_add", "accumulate", "elementwise")


@dataclass(frozen=True)
class NodeCost:
    """What one node costs for one batch of ``batch`` samples."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    ops: dict[str, int]  # count per kind in OP_KINDS (kinds with zero count are omitted)
    param_bytes: int
    act_bytes: int = 0  # activation bytes read (non-parameter inputs) plus bytes written (the output)
    latency_s: float | None = None  # measured here; None when not measured
    latency_label: str = "not measured"
    kernel: str = ""    # the compiled kernel this node's time was measured in
    # a convolution: (input channels per group, output channels per group, output width), which
    # fix the register tile of edgert's CPU schedule (compilers/backends/cpu_tiles.py)
    conv_shape: tuple[int, ...] = ()
    parts: tuple["NodeCost", ...] = ()  # a fused kernel's nodes (its ops are their sum)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of any precision (fp32, int8, binary, shift-add)."""
        return sum(v for k, v in self.ops.items() if k != "elementwise" and k != "accumulate")

    @property
    def other_ops(self) -> int:
        return self.ops.get("elementwise", 0) + self.ops.get("accumulate", 0)

    @property
    def bytes_moved(self) -> int:
        """Bytes the node reads and writes once each: activations in and out plus its parameters."""
        return self.act_bytes + self.param_bytes

    def to_json(self) -> dict:
        return {**asdict(self), "macs": self.macs, "other_ops": self.other_ops, "bytes_moved": self.bytes_moved}


Counter = Callable[[ir.Node, list[ir.TensorSpec], ir.TensorSpec, int], dict[str, int]]
COUNTERS: dict[str, Counter] = {}  # op families register their counts here, by op name


def count_ops(node: ir.Node, ins: list[ir.TensorSpec], out: ir.TensorSpec, batch: int) -> dict[str, int]:
    """Operations of ``node`` by kind for a batch of ``batch``; the definitions follow the op's math."""
    if node.op not in COUNTERS and node.family != "float":
        importlib.import_module(f"edgert.ops.{node.family}")
    if node.op in COUNTERS:
        return {k: v for k, v in COUNTERS[node.op](node, ins, out, batch).items() if v}
    n_out = out.numel(batch)
    bias = n_out if len(ins) == 3 else 0
    match node:
        case ir.Conv2d():
            _, cg, kh, kw = ins[1].shape
            counts = {"fp32_mac": n_out * cg * kh * kw, "elementwise": bias}
        case ir.MatMul():
            counts = {"fp32_mac": n_out * ins[0].shape[-1]}
        case ir.Linear():
            counts = {"fp32_mac": n_out * ins[1].shape[1], "elementwise": bias}
        case ir.BatchNorm():
            counts = {"elementwise": 2 * n_out}  # one multiply and one add with folded scale and shift
        case ir.MaxPool2d() | ir.AvgPool2d():
            counts = {"elementwise": n_out * math.prod(node.kernel)}
        case ir.AdaptiveAvgPool2d():
            counts = {"elementwise": ins[0].numel(batch)}
        case ir.Softmax():
            counts = {"elementwise": 3 * n_out}  # exp, sum, divide
        case ir.ConvTranspose2d():
            _, o, kh, kw = ins[1].shape
            counts = {"fp32_mac": ins[0].numel(batch) * o * kh * kw, "elementwise": bias}
        case ir.Upsample():
            counts = {"elementwise": (6 if node.mode == "bilinear" else 0) * n_out}  # two lerps, or a copy
        case ir.Mean() | ir.Sum():
            counts = {"elementwise": ins[0].numel(batch)}
        case ir.LayerNorm():
            counts = {"elementwise": 5 * n_out}  # sum, squared deviation, subtract, scale, shift
        case ir.Gelu() | ir.Silu() | ir.Hardswish():
            counts = {"elementwise": 4 * n_out}  # a transcendental or clamp, then multiplies and adds
        case ir.Flatten() | ir.Reshape() | ir.Concat() | ir.Transpose() | ir.Pad():
            counts = {}  # data movement only
        case _:
            counts = {"elementwise": n_out}
    return {k: v for k, v in counts.items() if v}


def _nbytes(spec: ir.TensorSpec, batch: int) -> int:
    return spec.numel(batch) * np.dtype(spec.dtype).itemsize


def node_costs(artifact: Artifact, batch: int = 1) -> list[NodeCost]:
    """Static costs of every node (no latency)."""
    g = artifact.graph
    specs = g.infer_specs()
    costs = []
    for node in g.nodes:
        ins = [specs[i] for i in node.inputs]
        pbytes = sum(g.params[i].nbytes for i in node.inputs if i in g.params)
        act = sum(_nbytes(specs[i], batch) for i in node.inputs if i not in g.params)
        act += _nbytes(specs[node.output], batch)
        if node.op in VIEW_OPS:
            act = 0  # a view moves no data
        shape = tuple(batch if d is None else d for d in specs[node.output].shape)
        conv = ()
        if isinstance(node, ir.Conv2d):
            o, cg = ins[1].shape[:2]
            conv = (cg, o // node.groups, shape[-1])
        costs.append(NodeCost(node.name, node.op, shape, count_ops(node, ins, specs[node.output], batch),
                              pbytes, act, conv_shape=conv))
    return costs


VIEW_OPS = ("flatten", "reshape")  # outputs share their input's buffer


def peak_activation_bytes(g: ir.Graph, batch: int = 1) -> tuple[int, str]:
    """Peak bytes of live activations over a run in node order, and the node where it peaks.

    A value is live from the node that produces it (graph inputs: from the start) until its last
    reader has run (graph outputs: to the end); while a node runs, its inputs and its output are all
    live. Views (flatten, reshape) share their input's buffer, so they add nothing and keep it alive.
    Parameters are not activations and are not counted here.
    """
    specs = g.infer_specs()
    root: dict[str, str] = {}  # value -> the buffer it lives in
    for name, _ in g.inputs:
        root[name] = name
    for n in g.nodes:
        root[n.output] = root[n.inputs[0]] if n.op in VIEW_OPS and n.inputs[0] in root else n.output
    end = len(g.nodes)
    last: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v in root:
                last[root[v]] = max(last.get(root[v], -1), i)
    for o in g.outputs:
        last[root[o]] = end
    born = {name: -1 for name, _ in g.inputs}
    for i, n in enumerate(g.nodes):
        born.setdefault(root[n.output], i)
    size = {b: _nbytes(specs[b], batch) for b in born}
    peak, where = 0, ""
    for i, n in enumerate(g.nodes):
        live = sum(size[b] for b in born if born[b] <= i and last.get(b, born[b]) >= i)
        if live > peak:
            peak, where = live, n.name
    return peak, where


def attribute_latency(costs: list[NodeCost], kernel_times: list[tuple[str, float]],
                      kernel_nodes: dict[str, list[str]]) -> list[NodeCost]:
    """Spread measured kernel times over the nodes each kernel covers, in proportion to their ops.

    A fused kernel (say conv + bias + relu) is one measurement; its nodes share it by op count and
    are labelled with the kernel's name so the table never pretends they were timed separately.
    """
    by_name = {c.name: c for c in costs}
    out = {c.name: c for c in costs}
    for kernel, seconds in kernel_times:
        nodes = [n for n in kernel_nodes.get(kernel, []) if n in by_name]
        if not nodes:
            continue
        weights = np.array([by_name[n].macs * 2 + by_name[n].other_ops + 1 for n in nodes], float)
        label = "measured" if len(nodes) == 1 else f"measured, fused x{len(nodes)}"
        for n, share in zip(nodes, weights / weights.sum()):
            prev = out[n].latency_s or 0.0
            out[n] = replace(out[n], latency_s=prev + seconds * share, latency_label=label, kernel=kernel)
    return [out[c.name] for c in costs]


def _measure(engine, costs: list[NodeCost], batch: int, repeat: int, seed: int) -> tuple[list[NodeCost], dict]:
    """Time each kernel and the whole run on random input; nodes get their share of kernel time."""
    import statistics
    import time

    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(tuple(batch if d is None else d for d in spec.shape)).astype(spec.dtype)
          for _, spec in engine.inputs]
    kernel_times = engine.profile(*xs, repeat=repeat)
    kernels = engine.kernel_nodes()
    costs = attribute_latency(costs, kernel_times, kernels)
    in_kernels = {n for nodes in kernels.values() for n in nodes}
    costs = [c if c.name in in_kernels else replace(c, latency_label="no kernel (a view)") for c in costs]
    run = engine.step if engine.stateful else engine.run  # a spiking model is timed per time step
    run(*xs)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(*xs)
        runs.append(time.perf_counter() - t0)
    return costs, {"kernels": [{"kernel": k, "seconds": s, "nodes": kernels.get(k, [])} for k, s in kernel_times],
                   "latency_s": statistics.median(runs), "latency_min_s": min(runs),
                   "kernels_s": sum(s for _, s in kernel_times),
                   "latency_label": "measured end to end on this machine (median)"}


def profile_artifact(path, batch: int = 1, repeat: int = 50, seed: int = 0, targets=None,
                     measure: bool = True) -> dict:
    """Counts, bytes, peak activations and (when the artifact runs here) measured latency of an
    artifact, plus roofline latency, energy and fit estimates for each board in ``targets`` (names or
    Target objects; None: the artifact's own target). JSON-ready."""
    import os
    import platform

    from edgert.runtime.estimate import estimate_target
    from edgert.targets import Target, load_target

    artifact = Artifact.read(path)
    g = artifact.graph
    costs = node_costs(artifact, batch)
    arch = artifact.manifest["target"].get("arch")
    total: dict = {"latency_s": None, "latency_label": "not measured", "kernels_s": None}
    kernels: list = []
    firmware = None
    if "firmware" in artifact.manifest:
        why = "not measured here: microcontroller firmware (see firmware: emulated instruction count)"
        firmware = firmware_report(artifact, seed) if measure else None
    elif not artifact.runnable:
        why = "not measured: an estimate-only artifact has no compiled code"
    elif arch != platform.machine():
        why = f"not measured: the artifact is for {arch}, this machine is {platform.machine()}"
    elif not measure:
        why = "not measured (measurement switched off)"
    else:
        why = ""
        from edgert.runtime.engine import Engine

        costs, timing = _measure(Engine(artifact), costs, batch, repeat, seed)
        kernels = timing.pop("kernels")
        total.update(timing)
    if why:
        costs = [replace(c, latency_label=why) for c in costs]
        total["latency_label"] = why
    peak, peak_at = peak_activation_bytes(g, batch)
    stateful = {n.name: bool(n.stateful) for n in g.nodes}
    size = os.path.getsize(path)
    boards = [t if isinstance(t, Target) else load_target(t)
              for t in (targets if targets is not None else [artifact.target_name])]
    total.update({
        "macs": sum(c.macs for c in costs), "other_ops": sum(c.other_ops for c in costs),
        "ops": {k: sum(c.ops.get(k, 0) for c in costs) for k in OP_KINDS},
        "param_bytes": sum(c.param_bytes for c in costs),
        "bytes_moved": sum(c.bytes_moved for c in costs),
        "peak_activation_bytes": peak, "peak_activation_at": peak_at,
        "artifact_bytes": size})
    report = {
        "artifact": str(path),
        "target": artifact.target_name,
        "batch": batch,
        # a stateful (spiking) graph is counted, timed and priced for one time step
        "per": "time step" if any(stateful.values()) else "inference",
        "nodes": [c.to_json() for c in costs],
        "kernels": kernels,
        "total": total,
        "estimates": {b.name: estimate_target(costs, b, stateful, peak, size) for b in boards},
    }
    if firmware is not None:
        report["firmware"] = firmware
    return report


FIRMWARE_SOURCE = "measured from the linked image (arm-none-eabi-size)"


def firmware_report(artifact: Artifact, seed: int = 0, records: int = 4) -> dict:
    """Flash and RAM of an MCU artifact's linked image, beside the liveness estimate, and its
    instructions per inference (per time step for a spiking model) counted on the emulated core."""
    import statistics

    from edgert.runtime.mcu import McuRunner

    fw = artifact.manifest["firmware"]
    f = fw["footprint"]
    runner = McuRunner(artifact)
    _, spec = runner.inputs[0]
    per = tuple(1 if d is None else d for d in spec.shape[1:])
    rng = np.random.default_rng(seed)
    shape = (records, 1) + per if runner.stateful else (records,) + per
    runner.run(rng.standard_normal(shape).astype(np.float32))
    calls = runner.stats["instructions_per_call"]
    return {"flash_bytes": f["flash_bytes"], "ram_bytes": f["ram_bytes"], "arena_bytes": f["arena_bytes"],
            "stack_bytes": f["stack_bytes"], "source": FIRMWARE_SOURCE,
            "liveness_bytes": fw["liveness_bytes"], "weight_bytes": fw["weight_bytes"],
            "state_bytes": fw["state_bytes"], "machine": fw["machine"],
            "emulated_instructions": int(statistics.median(calls)),
            "instructions_label": f"emulated instruction count (QEMU {fw['machine']}, -icount), median of "
                                  f"{len(calls)} random inputs; not a time measured on a board"}
