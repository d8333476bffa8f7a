"""Pack signs before a flatten, so a binary dense reads the previous binary conv's packed output.

``flatten -> bitpack -> binary_dense`` packs in torch's (c, h, w) order; ``bitpack (NCHW) ->
bit_flatten -> binary_dense`` packs in (h, w, c) order, which needs the dense weight's columns
permuted the same way. Then ``fold_binary_threshold`` can fuse the conv, BatchNorm and max-pool
before it into packed output: the binary core never leaves bits. Only for channels a multiple of 64
(no padding between pixels) and when every reader of the packed vector is a binary dense.
"""

from __future__ import annotations

import dataclasses

from edgert import ir
from edgert.ops.binary import BinaryDense, BitPack
from edgert.ops.binary.bits import pack_last_ref, unpack_last_ref
from edgert.ops.binary.nodes import BitFlatten


def pack_before_flatten(g: ir.Graph) -> ir.Graph:
    """Rewrite flatten -> bitpack (-> binary_dense only) as bitpack -> bit_flatten with permuted dense weights."""
    producers, consumers = g.producers(), g.consumers()
    specs = None
    params = dict(g.params)
    replace: dict[str, tuple[ir.Node, ...]] = {}
    drop: set[str] = set()
    for pack in g.nodes:
        flat = producers.get(pack.inputs[0]) if isinstance(pack, BitPack) else None
        if not isinstance(flat, ir.Flatten) or flat.start_dim != 1 or pack.groups != 1:
            continue
        if len(consumers.get(flat.output, ())) != 1 or flat.output in g.outputs or pack.output in g.outputs:
            continue
        readers = consumers.get(pack.output, [])
        if not readers or not all(isinstance(r, BinaryDense) and r.inputs[0] == pack.output
                                  and r.inputs[1] in params for r in readers):
            continue
        specs = specs or g.infer_specs()
        shape = specs[flat.inputs[0]].shape
        if len(shape) != 4 or shape[1] % 64:
            continue
        c, h, w = shape[1:]
        packed4 = f"{pack.output}.nhwc"
        replace[pack.name] = (BitPack(name=pack.name, inputs=flat.inputs, output=packed4, channels=c),
                              BitFlatten(name=flat.name, inputs=(packed4,), output=pack.output))
        drop.add(flat.name)
        for r in readers:
            bits = unpack_last_ref(params[r.inputs[1]], c * h * w).reshape(-1, c, h, w).transpose(0, 2, 3, 1)
            name = f"{r.name}.weight_hwc"
            params[name] = pack_last_ref(bits.reshape(bits.shape[0], -1))
            replace[r.name] = (dataclasses.replace(r, inputs=(r.inputs[0], name) + r.inputs[2:]),)
    if not replace:
        return g
    return g.with_nodes((m for n in g.nodes if n.name not in drop for m in replace.get(n.name, (n,))), params)
