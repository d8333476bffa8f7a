"""Fold eval-mode BatchNorm into the conv or linear layer that feeds it."""

from __future__ import annotations

import dataclasses

import numpy as np

from edgert import ir


def fold_batchnorm(g: ir.Graph) -> ir.Graph:
    """Replace conv/linear -> batch_norm by one conv/linear with w' = w*s, b' = (b - mean)*s + beta.

    Here s = gamma / sqrt(var + eps) per output channel. A BatchNorm is folded only when its producer
    is a conv2d, or a linear with rank-2 output, whose output feeds nothing else and whose weights are
    used by no other node; others are left in place. A reshape between them that keeps axes 0 and 1
    (a conv1d's [N, C, 1, L] -> [N, C, L]) stays, after the folded conv. Arithmetic is done in float64,
    then rounded once.
    """
    producers = g.producers()
    consumers = g.consumers()
    params = dict(g.params)
    replaced: dict[str, ir.Node] = {}  # producer name -> folded node
    dropped: dict[str, str] = {}       # bn output -> folded producer output
    specs = g.infer_specs()
    for bn in g.nodes:
        if not isinstance(bn, ir.BatchNorm):
            continue
        prod, view = producers.get(bn.inputs[0]), None
        if (isinstance(prod, ir.Reshape) and len(consumers[prod.output]) == 1
                and specs[prod.inputs[0]].shape[:2] == specs[prod.output].shape[:2]):
            view, prod = prod, producers.get(prod.inputs[0])
        if not isinstance(prod, (ir.Conv2d, ir.Linear)) or len(consumers[prod.output]) != 1:
            continue
        if isinstance(prod, ir.Linear) and specs[prod.output].rank != 2:
            continue
        if any(p not in params or len(consumers[p]) != 1 for p in prod.inputs[1:]):
            continue
        if any(p not in params for p in bn.inputs[1:]):
            continue
        gamma, beta, mean, var = (params[p].astype(np.float64) for p in bn.inputs[1:])
        scale = gamma / np.sqrt(var + bn.eps)
        w = params[prod.inputs[1]].astype(np.float64)
        b = params[prod.inputs[2]].astype(np.float64) if len(prod.inputs) == 3 else np.zeros(len(scale))
        w_name, b_name = f"{prod.name}.weight_folded", f"{prod.name}.bias_folded"
        params[w_name] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        params[b_name] = ((b - mean) * scale + beta).astype(np.float32)
        replaced[prod.name] = dataclasses.replace(prod, inputs=(prod.inputs[0], w_name, b_name),
                                                  output=prod.output if view else bn.output)
        if view:
            replaced[view.name] = dataclasses.replace(view, output=bn.output)
        dropped[bn.name] = bn.output
    if not replaced:
        return g
    return g.with_nodes((replaced.get(n.name, n) for n in g.nodes if n.name not in dropped), params).validate()
