"""Drop nodes and parameters that no graph output depends on."""

from __future__ import annotations

from edgert import ir


def remove_dead_nodes(g: ir.Graph) -> ir.Graph:
    """Keep only the nodes (and the parameters they read) that some graph output needs."""
    live = set(g.outputs)
    keep = []
    for node in reversed(g.nodes):
        if node.output in live:
            keep.append(node)
            live.update(node.inputs)
    nodes = tuple(reversed(keep))
    params = {k: v for k, v in g.params.items() if k in live}
    if len(nodes) == len(g.nodes) and len(params) == len(g.params):
        return g
    return ir.Graph(inputs=g.inputs, nodes=nodes, outputs=g.outputs, params=params)
