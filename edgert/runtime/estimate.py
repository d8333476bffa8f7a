"""Per-target estimates from a board file: roofline latency, energy under two models, memory fit.

Nothing here is a measurement. Every figure carries a label saying which model made it:

- **latency, "estimated (roofline)"**: per node, compute time ``sum_k ops_k / (ops_per_cycle_k x
  clock)`` on one core (edgert runs one thread per inference) against memory time ``bytes_moved /
  bandwidth``; the larger binds. The bandwidth is the first-level cache's
  (``l1_bandwidth_bytes_per_s``) when the node's bytes fit in ``l1_bytes``, else the cache's
  (``cache_bandwidth_bytes_per_s``) when they fit in ``cache_bytes`` (a model run again and again
  keeps them there), else the
  last on-chip level's (``sram_bandwidth_bytes_per_s``) when they fit in ``sram_bytes``, else
  memory's. A board file may add ``cpu.kernel_overhead_cycles`` (the fixed cost of one kernel call),
  charged once per node that moves data (the nodes of a fused kernel each pay it: a small
  overestimate).
- **latency, "estimated (roofline and the board's kernel tables)"**: on a board whose file has kernel
  tables (edgert.targets.KERNEL_TABLES, measured by ``python -m tools.bench calibrate`` on the host),
  the compute time is divided by the efficiency of edgert's kernel for the node's op
  (``op_efficiency``; for a convolution vectorized over output channels, a global pool or a ReLU,
  times the ``size_efficiency`` curve at its register tile width, window or innermost dimension,
  edgert.targets.SIZES; the nodes of
  a fused kernel each at their own), and the call overhead is the op's own (``op_overhead_cycles``).
- **energy, "compute-only (per-op table)"**: ``sum_k ops_k x energy_k``. On a board with
  ``neuron_update_pj`` (neuromorphic), a stateful node's output elements are priced as neuron updates
  instead of as elementwise ops.
- **energy, "memory-aware (per-op + per-byte)"**: compute-only plus every byte a node moves priced
  at the on-chip SRAM figure when the working set fits in ``memory.sram_bytes``, else at the DRAM
  figure (on a microcontroller the "DRAM" figure is the flash the weights are read from). Activations
  fit when the peak of live activations fits; parameters fit when all parameters plus that peak fit
  (so they stay on chip from one inference to the next).
- **fit**: RAM must hold the peak of live activations plus, unless the board reads weights in place
  from flash (``weights_in_flash``), the parameters; flash must hold the artifact (on a board that
  reads weights from flash: the parameters, as no code is generated for it yet). The runtime
  itself (Python, TVM, or a microcontroller's firmware) is not counted, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgert.compilers.backends.cpu_tiles import conv_tile_columns, packs_weight
from edgert.runtime.profile import NodeCost
from edgert.targets import Target

LATENCY_LABEL = "estimated (roofline, 1 core)"
LATENCY_LABEL_KERNELS = "estimated (roofline and the board's kernel tables, 1 core)"
COMPUTE_ONLY = "compute-only (per-op table)"
MEMORY_AWARE = "memory-aware (per-op + per-byte)"
PJ = 1e-12


@dataclass(frozen=True)
class NodeEstimate:
    """One node on one board: roofline latency and energy under both models (None: cannot run there)."""

    name: str
    latency_s: float | None
    compute_s: float | None
    memory_s: float
    bound: str  # "compute", "memory", or why there is no estimate
    energy_compute_j: float | None
    energy_memory_j: float | None
    energy_by_kind_j: dict[str, float]  # compute-only energy per op kind, plus "sram" and "dram" bytes

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def missing_kinds(cost: NodeCost, target: Target) -> list[str]:
    """Op kinds the node needs that the board has no throughput figure for."""
    return [k for k, v in cost.ops.items() if v and not target.throughput.get(k)]


def latency_label(target: Target) -> str:
    has_tables = target.op_efficiency or target.op_overhead_cycles or target.size_efficiency
    return LATENCY_LABEL_KERNELS if has_tables else LATENCY_LABEL


def interpolate(curve: dict[int, float], x: float) -> float:
    """Piecewise-linear through the curve's (x, value) points; flat beyond its ends."""
    xs = sorted(curve)
    if x <= xs[0]:
        return curve[xs[0]]
    for a, b in zip(xs, xs[1:]):
        if x <= b:
            return curve[a] + (curve[b] - curve[a]) * (x - a) / (b - a)
    return curve[xs[-1]]


def kernel_efficiency(cost: NodeCost, target: Target) -> float:
    """The fraction of the board's op-kind throughput that edgert's kernel for this node reaches (1
    when the board file says nothing about it)."""
    eff = target.op_efficiency.get(cost.op, 1.0)
    curve = target.size_efficiency.get(cost.op)
    size = kernel_size(cost, target) if curve else None
    return eff * interpolate(curve, size) if size else eff


def kernel_size(cost: NodeCost, target: Target) -> int | None:
    """The size a board's ``size_efficiency`` curve for the node's op is read at (targets.SIZES), or
    None when the curve does not apply to this node."""
    if cost.op == "conv2d" and cost.conv_shape:
        _, out_per_group, width = cost.conv_shape
        if packs_weight(out_per_group, target.cpu["simd_bits"] // 32):
            return conv_tile_columns(width)
    elif cost.op == "adaptive_avg_pool2d" and cost.output_shape:
        outputs = 1
        for d in cost.output_shape:
            outputs *= d
        return cost.ops.get("elementwise", 0) // outputs or None  # it counts one op per element read
    elif cost.op == "relu" and len(cost.output_shape) > 1:
        return cost.output_shape[-1]
    return None


def call_overhead_s(cost: NodeCost, target: Target) -> float:
    """The fixed cost of one kernel call for this node's op: the op's own figure, else the board's."""
    cycles = target.op_overhead_cycles.get(cost.op, target.cpu.get("kernel_overhead_cycles", 0))
    return cycles / target.cpu["clock_hz"]


def estimate_node(cost: NodeCost, target: Target, stateful: bool = False,
                  acts_on_chip: bool = True, params_on_chip: bool = True) -> NodeEstimate:
    """Roofline latency and both energy models for one node on ``target``."""
    clock = target.cpu.get("clock_hz", 0.0)
    bw = target.memory.get("bandwidth_bytes_per_s")
    mem = target.memory
    if cost.bytes_moved <= mem.get("l1_bytes", -1) and mem.get("l1_bandwidth_bytes_per_s"):
        bw = mem["l1_bandwidth_bytes_per_s"]  # the node's data stays in the core's first-level cache
    elif cost.bytes_moved <= mem.get("cache_bytes", -1) and mem.get("cache_bandwidth_bytes_per_s"):
        bw = mem["cache_bandwidth_bytes_per_s"]  # the node's data stays in the core's cache
    elif cost.bytes_moved <= mem.get("sram_bytes", -1) and mem.get("sram_bandwidth_bytes_per_s"):
        bw = mem["sram_bandwidth_bytes_per_s"]  # or in the last on-chip level
    memory_s = cost.bytes_moved / bw if bw else 0.0
    lacking = missing_kinds(cost, target)
    if not target.throughput or not clock:
        compute_s, bound = None, "no throughput figures in the board file"
    elif lacking:
        compute_s, bound = None, f"cannot run here: the board has no {', '.join(lacking)} units"
    else:
        # a fused kernel: each of its nodes at its own kernel's efficiency (a ReLU folded into a
        # convolution's write-back does not run at the convolution's rate)
        compute_s = sum(sum(v / (target.throughput[k] * clock) for k, v in part.ops.items())
                        / kernel_efficiency(part, target) for part in cost.parts or (cost,))
        bound = "compute" if compute_s >= memory_s else "memory"
    latency = None
    if compute_s is not None:
        latency = max(compute_s, memory_s)
        if cost.ops or cost.bytes_moved:  # a view has no kernel to call
            latency += call_overhead_s(cost, target)

    by_kind: dict[str, float] = {}
    e = target.energy
    priced = True
    ops = dict(cost.ops)
    if stateful and "neuron_update_pj" in e:
        neurons = 1
        for d in cost.output_shape:
            neurons *= d
        ops["elementwise"] = 0
        by_kind["neuron_update"] = neurons * e["neuron_update_pj"] * PJ
    for k, v in ops.items():
        if not v:
            continue
        if f"{k}_pj" not in e:
            priced = False
            continue
        by_kind[k] = by_kind.get(k, 0.0) + v * e[f"{k}_pj"] * PJ
    compute_j = sum(by_kind.values()) if priced and e else None
    memory_j = None
    if compute_j is not None:
        sram_b = (cost.act_bytes if acts_on_chip else 0) + (cost.param_bytes if params_on_chip else 0)
        dram_b = cost.bytes_moved - sram_b
        by_kind["sram"] = sram_b * e["sram_byte_pj"] * PJ
        by_kind["dram"] = dram_b * e["dram_byte_pj"] * PJ
        memory_j = compute_j + by_kind["sram"] + by_kind["dram"]
    return NodeEstimate(cost.name, latency, compute_s, memory_s, bound, compute_j, memory_j, by_kind)


def fit(target: Target, peak_act: int, param_bytes: int, artifact_bytes: int) -> dict:
    """RAM and flash verdicts: what is needed, what the board has, and whether it fits."""
    in_flash = bool(target.weights_in_flash)
    ram_need = peak_act + (0 if in_flash else param_bytes)
    out = {}
    for what, need, have, counts in (
            ("ram", ram_need, target.memory.get("ram_bytes"),
             "peak live activations" + ("" if in_flash else " + parameters")),
            ("flash", param_bytes if in_flash else artifact_bytes, target.memory.get("flash_bytes"),
             "parameters (no code is generated for this board yet)" if in_flash else "the artifact file")):
        ok = have is not None and need <= have
        verdict = ("fits" if ok else "does NOT fit") if have is not None else "unknown (board file has no size)"
        out[what] = {"need_bytes": need, "have_bytes": have, "fits": ok if have is not None else None,
                     "verdict": verdict, "share": need / have if have else None,
                     "counts": counts + "; the runtime itself is not counted"}
    return out


def estimate_target(costs: list[NodeCost], target: Target, stateful: dict[str, bool], peak_act: int,
                    artifact_bytes: int) -> dict:
    """Every node and the total on one board, JSON-ready."""
    params = sum(c.param_bytes for c in costs)
    sram = target.memory.get("sram_bytes", 0)
    acts_on_chip = peak_act <= sram
    params_on_chip = peak_act + params <= sram
    nodes = [estimate_node(c, target, stateful.get(c.name, False), acts_on_chip, params_on_chip) for c in costs]
    lat = [n.latency_s for n in nodes]
    ej = [n.energy_compute_j for n in nodes]
    em = [n.energy_memory_j for n in nodes]
    by_kind: dict[str, float] = {}
    for n in nodes:
        for k, v in n.energy_by_kind_j.items():
            by_kind[k] = by_kind.get(k, 0.0) + v
    cannot = sorted({n.bound for n in nodes if n.latency_s is None})
    return {
        "target": target.name,
        "description": target.description,
        "labels": {"latency": latency_label(target), "energy_compute": COMPUTE_ONLY, "energy_memory": MEMORY_AWARE},
        "nodes": [n.to_json() for n in nodes],
        "total": {
            "latency_s": None if None in lat else sum(lat),
            "energy_compute_j": None if None in ej else sum(ej),
            "energy_memory_j": None if None in em else sum(em),
            "energy_by_kind_j": by_kind,
            "compute_bound_nodes": sum(n.bound == "compute" for n in nodes),
            "memory_bound_nodes": sum(n.bound == "memory" for n in nodes),
            "not_estimated": cannot,
            "activations_on_chip": acts_on_chip,
            "params_on_chip": params_on_chip,
        },
        "fit": fit(target, peak_act, params, artifact_bytes),
        "roofline": {"peak_ops_per_s": {k: v * target.cpu.get("clock_hz", 0) for k, v in target.throughput.items()},
                     "bandwidth_bytes_per_s": target.memory.get("bandwidth_bytes_per_s")},
    }
