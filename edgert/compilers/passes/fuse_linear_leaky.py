"""Fuse a Linear whose only reader is a Leaky neuron into one LinearLeaky node."""

from __future__ import annotations

import numpy as np

from edgert import ir


def fuse_linear_leaky(g: ir.Graph) -> ir.Graph:
    """Replace Linear -> Leaky by LinearLeaky (weight stored transposed; a zero bias when none)."""
    if not any(n.op == "leaky" for n in g.nodes):
        return g
    from edgert.ops.spiking.nodes import LinearLeaky

    producers, consumers = g.producers(), g.consumers()
    params = dict(g.params)
    fused: dict[str, ir.Node] = {}  # leaky name -> fused node
    dropped: set[str] = set()
    for n in g.nodes:
        lin = producers.get(n.inputs[0]) if n.op == "leaky" else None
        if (not isinstance(lin, ir.Linear) or len(consumers.get(lin.output, [])) != 1
                or lin.output in g.outputs or lin.inputs[1] not in g.params
                or (len(lin.inputs) == 3 and lin.inputs[2] not in g.params)):
            continue
        w = g.params[lin.inputs[1]]
        if w.dtype != np.float32:
            continue
        wt = f"{lin.inputs[1]}.t"
        params[wt] = np.ascontiguousarray(w.T)
        if len(lin.inputs) == 3:
            bias = lin.inputs[2]
        else:
            bias = f"{lin.name}.zero_bias"
            params[bias] = np.zeros(w.shape[0], np.float32)
        fused[n.name] = LinearLeaky(name=n.name, inputs=(lin.inputs[0], wt, bias) + n.inputs[1:], output=n.output,
                                    reset=n.reset, reset_delay=n.reset_delay, instant_reset=n.instant_reset,
                                    graded=n.graded)
        dropped.add(lin.name)
    if not fused:
        return g
    return g.with_nodes((fused.get(n.name, n) for n in g.nodes if n.name not in dropped), params)
