"""Insert EcoTTA-style side blocks: h -> h + conv1x1(h) after each conv block, starting as the identity.

With ``rank`` r the side branch is a bottleneck, conv1x1 C->r then conv1x1 r->C (2rC + r + C parameters
instead of C^2 + C): a step's gradients and optimizer state shrink with r, which is what a batch-1
step's memory is made of on a small network. The C->r weights start small and random (seeded), the
r->C weights at zero, so the block still starts as the identity and both layers get a gradient.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgert import ir

# what may follow a conv inside one "conv block" (per-channel, elementwise)
BLOCK_TAIL = (ir.BatchNorm, ir.Relu, ir.Clip)


@dataclass(frozen=True)
class Adapter:
    """One side block: ``output = after + side``, ``side = conv1x1(after; weight, bias)``, or with a
    rank, ``side = conv1x1(conv1x1(after; down.weight, down.bias); up.weight, up.bias)``."""

    name: str       # "adapter.<k>"
    after: str      # the conv block's output h it reads
    side: str       # the side branch's own output
    output: str     # h + side: what the block's consumers read now
    channels: int
    rank: int | None = None

    @property
    def mid(self) -> str:
        """The bottleneck's output (a rank-r block only)."""
        return f"{self.name}.mid"

    @property
    def params(self) -> tuple[str, ...]:
        if self.rank is None:
            return f"{self.name}.weight", f"{self.name}.bias"
        return tuple(f"{self.name}.{layer}.{p}" for layer in ("down", "up") for p in ("weight", "bias"))

    def to_json(self) -> dict:
        return {"name": self.name, "after": self.after, "side": self.side, "output": self.output,
                "channels": self.channels, "rank": self.rank, "params": list(self.params),
                **({"mid": self.mid} if self.rank is not None else {})}


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


def insert_adapters(g: ir.Graph, rank: int | None | Sequence[int | None] = None,
                    seed: int = 0) -> tuple[ir.Graph, list[Adapter]]:
    """Add a residual side block after every conv block that starts as the identity.

    Every consumer of a block output h (and the graph outputs) reads ``adapter.<k>.out = h + side(h)``
    instead. Without ``rank``: ``adapter.<k>.weight`` [C, C, 1, 1] and ``adapter.<k>.bias`` [C], zeros.
    With ``rank`` r (capped at C; or one rank per block, in graph order): ``adapter.<k>.down.weight``
    [r, C, 1, 1] ~ N(0, 1/C) (seeded), ``.down.bias`` [r] zeros, ``adapter.<k>.up.weight`` [C, r, 1, 1]
    and ``.up.bias`` [C] zeros.
    """
    ends = block_ends(g)
    ranks = list(rank) if isinstance(rank, Sequence) else [rank] * len(ends)
    if len(ranks) != len(ends) or any(r is not None and r < 1 for r in ranks):
        raise ValueError(f"adapter ranks {ranks}: need one per conv block ({len(ends)}), each >= 1 or None")
    specs = g.infer_specs()
    rng = np.random.default_rng(seed)
    adapters = []
    for k, (h, r) in enumerate(zip(ends, ranks)):
        name, c = f"adapter.{k}", int(specs[h].shape[1])
        adapters.append(Adapter(name, h, f"{name}.side", f"{name}.out", c, None if r is None else min(r, c)))
    rename = {a.after: a.output for a in adapters}
    params = dict(g.params)
    nodes: list[ir.Node] = []
    by_after = {a.after: a for a in adapters}
    for n in g.nodes:
        nodes.append(dataclasses.replace(n, inputs=tuple(rename.get(i, i) for i in n.inputs)))
        a = by_after.get(n.output)
        if a is None:
            continue
        c = a.channels
        if a.rank is None:
            w, b = a.params
            params[w] = np.zeros((c, c, 1, 1), np.float32)
            params[b] = np.zeros(c, np.float32)
            nodes.append(ir.Conv2d(name=f"{a.name}.conv", inputs=(a.after, w, b), output=a.side))
        else:
            dw, db, uw, ub = a.params
            params[dw] = (rng.standard_normal((a.rank, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
            params[db] = np.zeros(a.rank, np.float32)
            params[uw] = np.zeros((c, a.rank, 1, 1), np.float32)
            params[ub] = np.zeros(c, np.float32)
            nodes.append(ir.Conv2d(name=f"{a.name}.down", inputs=(a.after, dw, db), output=a.mid))
            nodes.append(ir.Conv2d(name=f"{a.name}.up", inputs=(a.mid, uw, ub), output=a.side))
        nodes.append(ir.Add(name=f"{a.name}.add", inputs=(a.after, a.side), output=a.output))
    outputs = tuple(rename.get(o, o) for o in g.outputs)
    return ir.Graph(g.inputs, nodes, outputs, params).validate(), adapters
