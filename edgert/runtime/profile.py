"""Per-node cost of an artifact: op counts, parameter bytes, and latency measured on this machine."""

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
    latency_s: float | None = None  # measured here; None when not measured
    latency_label: str = "not measured"
    kernel: str = ""    # the compiled kernel this node's time was measured in

    @property
    def macs(self) -> int:
        """Multiply-accumulates of any precision (fp32, int8, binary, shift-add)."""
        return sum(v for k, v in self.ops.items() if k != "elementwise" and k != "accumulate")

    @property
    def other_ops(self) -> int:
        return self.ops.get("elementwise", 0) + self.ops.get("accumulate", 0)

    def to_json(self) -> dict:
        return {**asdict(self), "macs": self.macs, "other_ops": self.other_ops}


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
        case ir.Flatten() | ir.Reshape() | ir.Concat():
            counts = {}  # data movement only
        case _:
            counts = {"elementwise": n_out}
    return {k: v for k, v in counts.items() if v}


def node_costs(artifact: Artifact, batch: int = 1) -> list[NodeCost]:
    """Static costs of every node (no latency)."""
    g = artifact.graph
    specs = g.infer_specs()
    costs = []
    for node in g.nodes:
        ins = [specs[i] for i in node.inputs]
        pbytes = sum(g.params[i].nbytes for i in node.inputs if i in g.params)
        shape = tuple(batch if d is None else d for d in specs[node.output].shape)
        costs.append(NodeCost(node.name, node.op, shape, count_ops(node, ins, specs[node.output], batch), pbytes))
    return costs


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


def profile_artifact(path, batch: int = 1, repeat: int = 50, seed: int = 0) -> dict:
    """Load an artifact, time its kernels and the whole run on random input; JSON-ready report."""
    import statistics
    import time

    from edgert.runtime.engine import load

    engine = load(path)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(tuple(batch if d is None else d for d in spec.shape)).astype(spec.dtype)
          for _, spec in engine.inputs]
    costs = node_costs(engine.artifact, batch)
    kernel_times = engine.profile(*xs, repeat=repeat)
    kernels = engine.kernel_nodes()
    costs = attribute_latency(costs, kernel_times, kernels)
    in_kernels = {n for nodes in kernels.values() for n in nodes}
    costs = [c if c.name in in_kernels else replace(c, latency_label="no kernel (a view)")
             for c in costs]
    engine.run(*xs)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        engine.run(*xs)
        runs.append(time.perf_counter() - t0)
    return {
        "artifact": str(path),
        "target": engine.artifact.target_name,
        "batch": batch,
        "nodes": [c.to_json() for c in costs],
        "kernels": [{"kernel": k, "seconds": s, "nodes": kernels.get(k, [])}
                    for k, s in kernel_times],
        "total": {"macs": sum(c.macs for c in costs), "other_ops": sum(c.other_ops for c in costs),
                  "ops": {k: sum(c.ops.get(k, 0) for c in costs) for k in OP_KINDS},
                  "param_bytes": sum(c.param_bytes for c in costs),
                  "latency_s": statistics.median(runs), "latency_min_s": min(runs),
                  "kernels_s": sum(s for _, s in kernel_times),
                  "latency_label": "measured end to end on this machine (median)"},
    }
