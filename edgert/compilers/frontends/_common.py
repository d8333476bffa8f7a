"""What the torch and ONNX frontends share: problem collection, unique names, reshape mapping."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from edgert import ir
from edgert.errors import UnsupportedOpError

# Stand-in for a clip bound that the model leaves open; float32's largest value, so JSON stays plain.
FLOAT32_MAX = 3.4028234663852886e38


class Unsupported(Exception):
    """Raised inside a converter: this use of a supported op cannot be compiled (message says why)."""


class BatchChange(Unsupported):
    """An op's output does not keep the input's batch axis 0 (so samples would mix)."""


@dataclass
class Problems:
    """Every op a frontend cannot convert, gathered so the user sees them all in one error."""

    frontend: str
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, op: str, where: str, reason: str = "") -> None:
        line = f"{op} at {where}" + (f": {reason}" if reason else "")
        if line not in self.lines:
            self.lines.append(line)

    def note(self, text: str) -> None:
        """A hint printed once after the list of problems."""
        if text not in self.notes:
            self.notes.append(text)

    def raise_if_any(self, supported: list[str], fix: str) -> None:
        if not self.lines:
            return
        raise UnsupportedOpError(
            f"{self.frontend}: the model uses {len(self.lines)} operation(s) edgert cannot compile:\n  "
            + "\n  ".join(self.lines)
            + "".join(f"\nNote: {t}" for t in self.notes)
            + f"\nSupported: {', '.join(sorted(set(supported)))}.\n{fix}")


class Names:
    """Hands out value and node names that are unique within one graph."""

    def __init__(self, taken: tuple[str, ...] = ()) -> None:
        self.taken = set(taken)

    def __call__(self, want: str) -> str:
        base = want or "v"
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


def clean(name: str) -> str:
    """A readable identifier from a file's value name: runs of odd characters become one underscore."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_.") or "v"


def reshape_node(name: str, x: str, out: str, in_shape: tuple, out_shape: tuple) -> ir.Node | None:
    """Flatten or Reshape taking ``in_shape`` to ``out_shape`` (batch dim 0 kept); None for a no-op.

    Raises Unsupported when dim 0 of ``out_shape`` is not the batch of ``in_shape`` (``None`` stands for
    the dynamic batch in both).
    """
    if len(out_shape) == 0 or out_shape[0] != in_shape[0] or any(not isinstance(d, int) for d in out_shape[1:]):
        raise BatchChange(
            f"the reshape from {show_shape(in_shape)} to {show_shape(out_shape)} changes the batch dimension "
            "0; keep it, e.g. x.flatten(1) or x.view(x.size(0), -1) in torch, or shape [0, -1] in ONNX")
    if tuple(out_shape) == tuple(in_shape):
        return None
    k = len(out_shape) - 1
    if 1 <= k < len(in_shape) and tuple(out_shape[:k]) == tuple(in_shape[:k]) \
            and out_shape[k] == math.prod(in_shape[k:]):
        return ir.Flatten(name=name, inputs=(x,), output=out, start_dim=k)
    return ir.Reshape(name=name, inputs=(x,), output=out, shape=tuple(out_shape[1:]))


def rename_outputs(g: ir.Graph) -> ir.Graph:
    """Name the node-produced graph outputs "output" (one) or "output_<i>" (several)."""
    produced = {n.output for n in g.nodes}
    new = {o: ("output" if len(g.outputs) == 1 else f"output_{i}")
           for i, o in enumerate(g.outputs) if o in produced and g.outputs.count(o) == 1}
    if not new:
        return g
    ren = lambda v: new.get(v, v)  # noqa: E731
    nodes = tuple(dataclasses.replace(n, inputs=tuple(map(ren, n.inputs)), output=ren(n.output)) for n in g.nodes)
    return ir.Graph(inputs=g.inputs, nodes=nodes, outputs=tuple(map(ren, g.outputs)), params=g.params)


def show_shape(shape: tuple) -> str:
    """A shape as text, the dynamic batch written N."""
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
