"""Pick how shift layers form their products on the target: shifts, or decoded integer multiplies."""

from __future__ import annotations

import dataclasses

from edgert import ir
from edgert.ops.shift.nodes import PATHS, _ShiftBase


def select_shift_path(g: ir.Graph, path: str) -> ir.Graph:
    """Set ``path`` ("shift_add" or "int_mac") on every shift node; both paths give identical results."""
    if path not in PATHS:
        raise ValueError(f"path {path!r} is not one of {PATHS}")
    nodes = tuple(dataclasses.replace(n, path=path) if isinstance(n, _ShiftBase) else n for n in g.nodes)
    return g if nodes == g.nodes else ir.Graph(inputs=g.inputs, nodes=nodes, outputs=g.outputs, params=g.params)


def preferred_path(throughput: dict) -> str:
    """The target's faster path by its catalogue throughput (ops per cycle); int_mac when unknown."""
    shift, mac = throughput.get("shift_add"), throughput.get("int8_mac")
    if isinstance(shift, (int, float)) and isinstance(mac, (int, float)) and shift > mac:
        return "shift_add"
    return "int_mac"
