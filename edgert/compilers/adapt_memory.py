"""Which BatchNorms the ``entropy`` step adapts, so the step fits a memory budget (``--adapt-memory``).

The step keeps the forward values its backward reads (as taps), a gradient per value on the way back,
Adam state for every adapted scale and shift, and transient buffers. Adapting only the last k
BatchNorms lets the backward stop at the k-th from the end, so fewer values are kept and fewer layers
are walked. ``plan_entropy`` takes the largest k (deepest first) whose estimated step peak at
``batch`` samples fits ``budget`` bytes, and records the choice, the estimate and the values to tap.

The estimate, per the runtime's accounting (runtime/adapt/entropy.py): kept values (the taps the
backward needs, the logits) + optimizer state (Adam: 2 float32 per scale and shift) + the transient
peak of the backward, taken as: the outputs it recomputes (relu, pooling, ...) + the parameter
gradients + the largest step of the walk (its incoming gradient and twice each outgoing one, padded:
the buffer and a temporary). ``step_estimate`` is that estimate for any seeds and wanted names; the
adapter's plan (compilers/adapters.py ``plan_blocks``) uses it to choose the side blocks to train.
"""

from __future__ import annotations

import re
from typing import Any

from edgert import ir
from edgert.errors import EdgertError

UNITS = {"": 1, "B": 1, "KB": 1 << 10, "KIB": 1 << 10, "MB": 1 << 20, "MIB": 1 << 20, "GB": 1 << 30,
         "GIB": 1 << 30}
MB = 1 << 20


def parse_size(text: str) -> int:
    """Bytes in "32MB", "512KB", "1.5GB" or "65536" (KB = 1024 bytes, as board RAM is counted)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in UNITS or float(m.group(1)) <= 0:
        raise EdgertError(f"--adapt-memory {text!r}: give a positive size like 32MB, 512KB, 1.5GB or a "
                          "number of bytes")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def size_text(n: int) -> str:
    """Bytes as "1.25 MB" or, under a megabyte, "12.6 KB" (budgets for batch 1 are a few KB)."""
    return f"{n / MB:.2f} MB" if n >= MB else f"{n / 1024:.1f} KB"


def bn_output(entry: dict[str, Any], graph: ir.Graph) -> str:
    """The tensor a planned BatchNorm writes in the compiled graph (the folded conv's output if folded)."""
    if entry["kind"] == "folded":
        return entry["tap"]
    return next(n.output for n in graph.nodes if n.name == entry["bn"])


def estimate(graph: ir.Graph, layers: list[dict[str, Any]], batch: int) -> dict[str, int]:
    """Estimated bytes of one entropy step adapting ``layers`` at ``batch`` samples, by part."""
    specs = graph.infer_specs()
    outs = [bn_output(e, graph) for e in layers]
    return step_estimate(graph, [graph.outputs[0]], outs, 2 * sum(specs[o].shape[1] for o in outs), batch)


def step_estimate(graph: ir.Graph, seeds: list[str], wrt: list[str], trained: int, batch: int,
                  kept_too: tuple[str, ...] = (), given: tuple[str, ...] = ()) -> dict[str, int]:
    """Estimated bytes of a gradient step from ``seeds`` (the logits first) back to ``wrt`` at ``batch``
    samples, with ``trained`` float32 parameters under Adam; ``kept_too``: values kept besides what the
    backward reads (e.g. a seed's own forward value); ``given``: cheap values kept, not recomputed."""
    from edgert.runtime.adapt.backprop import CHEAP, READS, Backward

    specs = graph.infer_specs()
    size = lambda name: specs[name].numel(batch) * 4  # noqa: E731  (float32)
    walk = Backward(graph, seeds, wrt, given)
    kept = sum(size(n) for n in dict.fromkeys([*walk.needed, *kept_too, seeds[0]]))
    reads = [r for n, w in walk.steps if any(w) for r in READS[n.op](n, w)]
    recomputed = {r for r in reads if isinstance(walk.producers.get(r), CHEAP) and r not in walk.needed}

    def step(node: ir.Node, want: tuple[bool, ...]) -> int:
        """The gradient coming in, and twice each gradient going out (the buffer and a temporary)."""
        if isinstance(node, ir.AdaptiveAvgPool2d) and tuple(node.output_size) == (1, 1):
            return size(node.output)  # its gradient is a broadcast view (backprop._adaptive_avg_pool2d)
        out = 0
        for name, w in zip(node.inputs, want):
            if w and name not in graph.params:
                pad = node.padding if isinstance(node, (ir.Conv2d, ir.MaxPool2d, ir.AvgPool2d)) else (0,) * 4
                h, wd = specs[name].shape[2:4] if specs[name].rank == 4 else (1, 1)
                out += size(name) * (h + pad[0] + pad[2]) * (wd + pad[1] + pad[3]) // (h * wd)
        return size(node.output) + 2 * out

    transient = sum(size(r) for r in recomputed) + 4 * trained + max(step(n, w) for n, w in walk.steps)
    optimizer = 2 * 4 * trained
    return {"kept": kept, "optimizer": optimizer, "transient": transient,
            "step_peak": kept + optimizer + transient}


def plan_entropy(graph: ir.Graph, norm: list[dict[str, Any]], budget: int | None = None,
                 batch: int = 1) -> dict[str, Any] | None:
    """The entropy step's plan: the deepest BatchNorms whose step fits ``budget`` at ``batch`` samples.

    None when the graph cannot take the step (several outputs, no BatchNorm, an op without a gradient
    rule before the last BatchNorm); an EdgertError when a budget is given and even the last one
    alone does not fit.
    """
    norm = [e for e in norm if e["kind"] in ("folded", "kept")]  # not the ones folded into binary/spiking ops
    if len(graph.outputs) != 1 or not norm:
        if budget is not None:
            raise EdgertError("--adapt-memory plans the entropy step, which needs a single-output model "
                              "with BatchNorm; this model has none to adapt: leave --adapt-memory out")
        return None
    tried: list[str] = []
    for k in range(len(norm), 0, -1):
        layers = norm[-k:]
        try:
            est = estimate(graph, layers, batch)
        except EdgertError:  # an op without a rule lies behind these layers: try fewer
            continue
        if budget is None or est["step_peak"] <= budget:
            from edgert.runtime.adapt.backprop import needed_values

            outs = [bn_output(e, graph) for e in layers]
            return {"layers": [e["bn"] for e in layers], "outputs": outs, "batch": batch,
                    "budget_bytes": budget, "estimate_bytes": est,
                    "needed": needed_values(graph, [graph.outputs[0]], outs)}
        tried.append(f"last {k}: {size_text(est['step_peak'])}")
    if budget is None:
        return None
    if not tried:
        raise EdgertError("--adapt-memory: no BatchNorm of this model can be adapted by the entropy step (an op "
                          "without a gradient rule follows them all); leave --adapt-memory out")
    raise EdgertError(f"--adapt-memory {size_text(budget)} is too small for the entropy step at batch "
                      f"{batch} (estimated {'; '.join(tried[-1:])}); give a larger budget or a smaller "
                      "--adapt-batch")
