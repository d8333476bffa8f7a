"""Converters for edgert.nn's binary custom ops (``torch.ops.edgert.*``) in an exported torch graph.

Each binary layer is one custom-op call with every attribute explicit, so a live module and a saved
``.pt2`` convert the same way: sign + pack of the input (``bitpack``), then ``binary_conv2d`` /
``binary_dense`` with the weights' signs packed into uint64 words and a float output
(``float32(dot) * scale + bias``). Passes later fuse BatchNorm + the next layer's sign into thresholds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import fx

import edgert.nn  # noqa: F401  (registers torch.ops.edgert.*, also needed to torch.export.load a .pt2)
from edgert.compilers.frontends._common import Unsupported
from edgert.ops.binary import BinaryConv2d, BinaryDense, BitPack
from edgert.ops.binary.bits import pack_conv_weight, pack_dense_weight
from edgert.ops.binary.nodes import BinarySign

if TYPE_CHECKING:
    from edgert.compilers.frontends.torch import TorchImporter

_PAD_MODES = {1.0: "one", 0.0: "zero"}


def _epilogue_params(c: TorchImporter, n: fx.Node, scale, bias, out: int) -> tuple[str, str]:
    names = []
    for arg, what, default in ((scale, "scale", np.ones), (bias, "bias", np.zeros)):
        if arg is None:
            names.append(c.param(f"{n.name}.{what}", f"{n.name}.{what}", default(out, np.float32)))
        else:
            c.const(arg, f"binary layer {what}")
            names.append(c.value(arg))
    return names[0], names[1]


def _pack_input(c: TorchImporter, n: fx.Node, x: fx.Node, channels: int, groups: int) -> str:
    return c.emit(BitPack, n, (c.value(x),), out=c.out(n, ".bits"), suffix=".pack", channels=channels,
                  groups=groups)


def _binary_conv2d(c: TorchImporter, n: fx.Node) -> None:
    x, weight, scale, bias, stride, padding, pad_value, groups = n.args
    w = c.const(weight, "binary conv weight")
    if float(pad_value) not in _PAD_MODES:
        raise Unsupported(f"pad_value={pad_value}; binary conv pads with 1.0 ('one') or 0.0 ('zero')")
    shape = c.shape(x)
    if len(shape) != 4:
        raise Unsupported(f"binary conv needs NCHW input, got {shape}")
    o, cg, kh, kw = w.shape
    packed = c.param(weight.name + ".bits", c.labels[weight.name] + "_bits", pack_conv_weight(w.detach().numpy()))
    s, b = _epilogue_params(c, n, scale, bias, o)
    xb = _pack_input(c, n, x, shape[1], int(groups))
    c.emit(BinaryConv2d, n, (xb, packed, s, b), in_channels=shape[1], out_channels=o, kernel=(kh, kw),
           stride=tuple(stride), padding=tuple(padding), pad_mode=_PAD_MODES[float(pad_value)],
           groups=int(groups))


def _binary_linear(c: TorchImporter, n: fx.Node) -> None:
    x, weight, scale, bias = n.args
    w = c.const(weight, "binary linear weight")
    shape = c.shape(x)
    if len(shape) != 2:
        raise Unsupported(f"binary linear needs [N, features] input, got {shape}; flatten first")
    packed = c.param(weight.name + ".bits", c.labels[weight.name] + "_bits", pack_dense_weight(w.detach().numpy()))
    s, b = _epilogue_params(c, n, scale, bias, w.shape[0])
    xb = _pack_input(c, n, x, shape[1], 1)
    c.emit(BinaryDense, n, (xb, packed, s, b), in_features=shape[1], out_features=w.shape[0])


def _sign(c: TorchImporter, n: fx.Node) -> None:
    c.emit(BinarySign, n, (c.value(n.args[0]),))


BINARY_CONVERTERS = {
    torch.ops.edgert.binary_conv2d.default: _binary_conv2d,
    torch.ops.edgert.binary_linear.default: _binary_linear,
    torch.ops.edgert.sign.default: _sign,
}
