"""Insert EcoTTA-style side blocks: h -> h + conv1x1(h) after each conv block, zero-initialized."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edgert import ir

# what may follow a conv inside one "conv block" (per-channel, elementwise)
BLOCK_TAIL = (ir.BatchNorm, ir.Relu, ir.Clip)


@dataclass(frozen=True)
class Adapter:
    """One side block: ``output = after + side``, ``side = conv1x1(after; weight, bias)``."""

    name: str       # "adapter.<k>"
    after: str      # the conv block's output h it reads
    side: str       # conv1x1(h): the side branch's own output
    output: str     # h + side: what the block's consumers read now
    channels: int

    @property
    def params(self) -> tuple[str, str]:
        return f"{self.name}.weight", f"{self.name}.bias"

    def to_json(self) -> dict:
        w, b = self.params
        return {"name": self.name, "after": self.after, "side": self.side, "output": self.output,
                "channels": self.channels, "weight": w, "bias": b}


def block_ends(g: ir.Graph) -> list[str]:
    """The output of each conv block: a Conv2d followed by its single-consumer BatchNorm/ReLU/Clip chain."""
    consumers = g.consumers()
    ends = []
    for n in g.nodes:
        if not isinstance(n, ir.Conv2d):
            continue
        out = n.output
        while len(consumers.get(out, [])) == 1:
            nxt = consumers[out][0]
            if not isinstance(nxt, BLOCK_TAIL) or nxt.inputs[0] != out:
                break
            out = nxt.output
        ends.append(out)
    return list(dict.fromkeys(ends))


def insert_adapters(g: ir.Graph) -> tuple[ir.Graph, list[Adapter]]:
    """Add a zero-initialized residual 1x1 conv after every conv block, so the graph computes the same.

    Every consumer of a block output h (and the graph outputs) reads ``adapter.<k>.out = h + conv1x1(h)``
    instead. Parameters are ``adapter.<k>.weight`` [C, C, 1, 1] and ``adapter.<k>.bias`` [C], zeros.
    """
    specs = g.infer_specs()
    adapters = []
    for k, h in enumerate(block_ends(g)):
        name = f"adapter.{k}"
        adapters.append(Adapter(name, h, f"{name}.side", f"{name}.out", int(specs[h].shape[1])))
    rename = {a.after: a.output for a in adapters}
    params = dict(g.params)
    nodes: list[ir.Node] = []
    by_after = {a.after: a for a in adapters}
    for n in g.nodes:
        nodes.append(dataclasses.replace(n, inputs=tuple(rename.get(i, i) for i in n.inputs)))
        a = by_after.get(n.output)
        if a is None:
            continue
        w, b = a.params
        params[w] = np.zeros((a.channels, a.channels, 1, 1), np.float32)
        params[b] = np.zeros(a.channels, np.float32)
        nodes.append(ir.Conv2d(name=f"{a.name}.conv", inputs=(a.after, w, b), output=a.side))
        nodes.append(ir.Add(name=f"{a.name}.add", inputs=(a.after, a.side), output=a.output))
    outputs = tuple(rename.get(o, o) for o in g.outputs)
    return ir.Graph(g.inputs, nodes, outputs, params).validate(), adapters
