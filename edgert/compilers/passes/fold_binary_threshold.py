"""Fuse a float-output binary layer, its BatchNorm and the next layer's sign into one integer compare.

A binary layer computes ``y = dot * s + b``; BatchNorm makes it ``z = a * dot + c`` per channel with
``a = s * gamma / sqrt(var + eps)`` and ``c = (b - mean) * gamma / sqrt(var + eps) + beta``; the next
layer packs ``bit = z < 0``. Since ``dot`` is an integer this is ``dot < ceil(-c / a)`` for ``a > 0``,
``not (dot < floor(-c / a) + 1)`` for ``a < 0`` (the channel is flipped), and a constant for ``a == 0``
(threshold saturated past K, the constant in ``flip``). A max-pool between them commutes with the
sign (max and sign are both monotone) and becomes a max-pool on packed bits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgert import ir
from edgert.ops.binary import BinaryConv2d, BinaryDense, BinaryMaxPool2d, BitPack
from edgert.ops.binary.threshold import thresholds


def _chain(g: ir.Graph, pack: BitPack, producers, consumers):
    """(layer, bn or None, pool or None) feeding ``pack`` through single-consumer values, else None."""
    bn = pool = None
    v = pack.inputs[0]
    node = producers.get(v)
    if isinstance(node, ir.MaxPool2d) and not node.ceil_mode and node.dilation == (1, 1):
        pool, v = node, node.inputs[0]
        node = producers.get(v) if len(consumers.get(v, ())) == 1 else None
    if isinstance(node, ir.BatchNorm) and all(i in g.params for i in node.inputs[1:]):
        bn, v = node, node.inputs[0]
        node = producers.get(v) if len(consumers.get(v, ())) == 1 else None
    if not isinstance(node, (BinaryConv2d, BinaryDense)) or node.output_kind != "float":
        return None
    if isinstance(node, BinaryDense) and (pool is not None or pack.groups != 1):
        return None
    if isinstance(node, BinaryConv2d) and node.out_channels % pack.groups:
        return None
    if any(n.output in g.outputs for n in (node, bn, pool) if n is not None):
        return None
    return node, bn, pool


def fold_binary_threshold(g: ir.Graph) -> ir.Graph:
    """Replace binary layer (float) -> [BatchNorm] -> [MaxPool2d] -> BitPack by a layer with packed output."""
    producers, consumers = g.producers(), g.consumers()
    params = dict(g.params)
    drop: set[str] = set()
    replace: dict[str, tuple[ir.Node, ...]] = {}
    for pack in g.nodes:
        if not isinstance(pack, BitPack) or len(consumers.get(pack.inputs[0], ())) != 1:
            continue
        found = _chain(g, pack, producers, consumers)
        if found is None:
            continue
        layer, bn, pool = found
        s = params[layer.inputs[2]].astype(np.float64)
        b = params[layer.inputs[3]].astype(np.float64)
        if bn is not None:
            gamma, beta, mean, var = (params[i].astype(np.float64) for i in bn.inputs[1:])
            inv = gamma / np.sqrt(var + bn.eps)
            s, b = s * inv, (b - mean) * inv + beta
        thr, flip = thresholds(s, b, layer.reduction)
        tname, fname = f"{layer.name}.threshold", f"{layer.name}.flip"
        params[tname], params[fname] = thr, flip
        extra = {"out_groups": pack.groups} if isinstance(layer, BinaryConv2d) else {}
        out = layer.output if pool is not None else pack.output
        new = [dataclasses.replace(layer, inputs=layer.inputs[:2] + (tname, fname), output=out,
                                   output_kind="bits", **extra)]
        if pool is not None:
            new.append(BinaryMaxPool2d(name=pool.name, inputs=(out,), output=pack.output, kernel=pool.kernel,
                                       stride=pool.stride, padding=pool.padding))
        drop.update(n.name for n in (layer, bn, pool) if n is not None)
        replace[pack.name] = tuple(new)
    if not replace:
        return g
    return g.with_nodes((m for n in g.nodes if n.name not in drop for m in replace.get(n.name, (n,))), params)
