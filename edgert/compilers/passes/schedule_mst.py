"""Give binary convs an MST channel-reuse schedule where it saves word-level work (ops/binary/mst.py)."""

from __future__ import annotations

import dataclasses

from edgert import ir
from edgert.ops.binary import BinaryConv2d
from edgert.ops.binary.mst import plan


def mst_report(g: ir.Graph) -> list[dict]:
    """Per binary conv (groups == 1): bit- and word-level XNOR reduction of its MST and the tree depth."""
    out = []
    for n in g.nodes:
        if isinstance(n, BinaryConv2d) and n.groups == 1:
            p = plan(g.params[n.inputs[1]], n.reduction)
            out.append({"layer": n.name, "channels": n.out_channels, "bit_reduction": p.bit_reduction,
                        "word_reduction": p.word_reduction, "depth": p.depth})
    return out


def schedule_mst(g: ir.Graph, min_gain: float = 2.0) -> ir.Graph:
    """Attach (order, parent, diff_ptr, diff_idx) to each groups-1 binary conv whose word-level gain >= min_gain.

    The reuse kernel works one pixel at a time and measured 1.4-2x slower per word than the
    register-blocked plain kernel, so by default reuse must at least halve the words to be used.
    """
    nodes, params, changed = [], dict(g.params), False
    for n in g.nodes:
        if isinstance(n, BinaryConv2d) and n.groups == 1 and len(n.inputs) == 4:
            p = plan(g.params[n.inputs[1]], n.reduction)
            if p.word_reduction >= min_gain:
                names = tuple(f"{n.name}.mst_{k}" for k in ("order", "parent", "diff_ptr", "diff_idx"))
                params.update(zip(names, p.arrays()))
                n, changed = dataclasses.replace(n, inputs=n.inputs + names), True
        nodes.append(n)
    if not changed:
        return g
    return ir.Graph(inputs=g.inputs, nodes=tuple(nodes), outputs=g.outputs, params=params)
