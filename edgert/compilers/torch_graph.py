"""Run a float ir.Graph with torch ops, so compile-time training (adapter warm-up) can differentiate it."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from edgert import ir
from edgert.errors import UnsupportedOpError


def _pad(x: torch.Tensor, padding: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    t, l, b, r = padding
    return F.pad(x, (l, r, t, b), value=value) if any(padding) else x


def _eval(n: ir.Node, a: list[torch.Tensor], out: ir.TensorSpec) -> torch.Tensor:
    x = a[0]
    match n:
        case ir.Conv2d():
            return F.conv2d(_pad(x, n.padding), a[1], a[2] if len(a) == 3 else None, n.stride, 0,
                            n.dilation, n.groups)
        case ir.Linear():
            return F.linear(x, a[1], a[2] if len(a) == 3 else None)
        case ir.BatchNorm():
            return F.batch_norm(x, a[3], a[4], a[1], a[2], False, 0.0, n.eps)
        case ir.Relu():
            return torch.relu(x)
        case ir.Clip():
            return torch.clamp(x, n.lo, n.hi)
        case ir.Sigmoid():
            return torch.sigmoid(x)
        case ir.Tanh():
            return torch.tanh(x)
        case ir.MaxPool2d():
            return F.max_pool2d(_pad(x, n.padding, float("-inf")), n.kernel, n.stride, 0, n.dilation,
                                n.ceil_mode)
        case ir.AvgPool2d() if n.padding[:2] == n.padding[2:]:
            return F.avg_pool2d(x, n.kernel, n.stride, n.padding[:2], n.ceil_mode, n.count_include_pad)
        case ir.AdaptiveAvgPool2d():
            return F.adaptive_avg_pool2d(x, n.output_size)
        case ir.Flatten() | ir.Reshape():
            return x.reshape((x.shape[0],) + out.shape[1:])
        case ir.Add():
            return a[0] + a[1]
        case ir.Concat():
            return torch.cat(a, dim=n.axis)
        case ir.Softmax():
            return torch.softmax(x, n.axis)
    raise UnsupportedOpError(f"{n.op} {n.name!r} cannot be trained at compile time (float ops only, "
                             "symmetric avg-pool padding); compile without --adapters")


def check_trainable(g: ir.Graph) -> None:
    """Raise UnsupportedOpError naming every node run_graph_torch cannot run."""
    bad = [f"{n.op} {n.name!r}" for n in g.nodes if n.family != "float"
           or (isinstance(n, ir.AvgPool2d) and n.padding[:2] != n.padding[2:])]
    if bad:
        raise UnsupportedOpError(f"side adapters are trained in torch at compile time, which runs float "
                                 f"ops only; this graph has {', '.join(bad)}: compile it without --adapters")


def run_graph_torch(g: ir.Graph, feeds: Mapping[str, torch.Tensor],
                    params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every value of ``g`` (inputs, params, node outputs) computed by torch from ``feeds`` and ``params``."""
    specs = g.infer_specs()
    env: dict[str, torch.Tensor] = {**params, **feeds}
    for n in g.nodes:
        env[n.output] = _eval(n, [env[i] for i in n.inputs], specs[n.output])
    return env
