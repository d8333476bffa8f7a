"""Turn sign -> conv/linear with +-1 weights (the ONNX pattern Sign -> Conv/MatMul) into binary layers.

``binary_sign`` followed by a Conv2d (dilation 1, zero padding) or a Linear whose weights are all
exactly +-1 computes ``conv(sign(x), W) + b``; that is ``bitpack`` + ``binary_conv2d`` with
``pad_mode="zero"``, scale 1 and the bias (``binary_dense`` for a Linear). The sign node stays when
something else also reads it.
"""

from __future__ import annotations

import numpy as np

from edgert import ir
from edgert.ops.binary import BinaryConv2d, BinaryDense, BitPack
from edgert.ops.binary.bits import pack_conv_weight, pack_dense_weight
from edgert.ops.binary.nodes import BinarySign


def _pm1(w: np.ndarray | None) -> bool:
    return w is not None and w.size > 0 and bool(np.all(np.abs(w) == 1.0))


def binarize_sign_layers(g: ir.Graph) -> ir.Graph:
    """Replace binary_sign -> conv2d / linear with +-1 constant weights by bitpack -> binary_conv2d / binary_dense."""
    producers, specs = g.producers(), None
    params = dict(g.params)
    nodes: list[ir.Node] = []
    changed = False
    for n in g.nodes:
        sign = producers.get(n.inputs[0]) if n.inputs else None
        w = g.params.get(n.inputs[1]) if len(n.inputs) > 1 else None
        if not isinstance(sign, BinarySign) or not isinstance(n, (ir.Conv2d, ir.Linear)) or not _pm1(w):
            nodes.append(n)
            continue
        if isinstance(n, ir.Conv2d) and n.dilation != (1, 1):
            nodes.append(n)
            continue
        specs = specs or g.infer_specs()
        x = sign.inputs[0]
        o = w.shape[0]
        bias = params[n.inputs[2]].astype(np.float32) if len(n.inputs) == 3 else np.zeros(o, np.float32)
        names = {k: f"{n.name}.{k}" for k in ("bits", "weight_bits", "scale", "bias")}
        params[names["weight_bits"]] = pack_conv_weight(w) if isinstance(n, ir.Conv2d) else pack_dense_weight(w)
        params[names["scale"]], params[names["bias"]] = np.ones(o, np.float32), bias
        groups = n.groups if isinstance(n, ir.Conv2d) else 1
        nodes.append(BitPack(name=f"{n.name}.pack", inputs=(x,), output=names["bits"],
                             channels=specs[x].shape[1] if isinstance(n, ir.Conv2d) else specs[x].shape[-1],
                             groups=groups))
        ins = (names["bits"], names["weight_bits"], names["scale"], names["bias"])
        if isinstance(n, ir.Conv2d):
            nodes.append(BinaryConv2d(name=n.name, inputs=ins, output=n.output, in_channels=specs[x].shape[1],
                                      out_channels=o, kernel=w.shape[2:], stride=n.stride, padding=n.padding,
                                      pad_mode="zero", groups=n.groups))
        else:
            if specs[x].rank != 2:
                nodes.pop()
                nodes.append(n)
                continue
            nodes.append(BinaryDense(name=n.name, inputs=ins, output=n.output, in_features=w.shape[1],
                                     out_features=o))
        changed = True
    if not changed:
        return g
    used = {i for m in nodes for i in m.inputs}
    live = set(g.outputs) | used
    nodes = [m for m in nodes if not isinstance(m, BinarySign) or m.output in live]
    used = {i for m in nodes for i in m.inputs}
    return ir.Graph(inputs=g.inputs, nodes=tuple(nodes), outputs=g.outputs,
                    params={k: v for k, v in params.items() if k in used})
