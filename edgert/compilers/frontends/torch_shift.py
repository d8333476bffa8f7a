"""Torch frontend converters for edgert.nn's shift layers (custom ops edgert::shift_conv2d / shift_linear)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

import edgert.nn.shift  # noqa: F401  (registers the custom ops, so a loaded .pt2 resolves them)
from edgert.compilers.frontends._common import Unsupported
from edgert.compilers.frontends.torch_ops import CONVERTERS, _args, _two
from edgert.errors import IRValidationError
from edgert.ops.shift import codes
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear

if TYPE_CHECKING:
    from edgert.compilers.frontends.torch import TorchImporter


def _packed(c: "TorchImporter", n: fx.Node, a: dict) -> tuple[str, tuple[int, ...]]:
    """Encode the (folded, constant) quantized weight as packed codes; emit it as a uint8 parameter."""
    w = c.const(a["weight"], "shift weight").detach().cpu().numpy()
    try:
        packed = codes.pack(codes.encode(w, a["bits"], a["zero"], a["scale_exp"]), a["bits"])
    except IRValidationError as e:
        raise Unsupported(str(e)) from None
    return c.param(f"{n.name}.codes", f"{n.name}.codes", packed), w.shape


def _attrs(a: dict) -> dict:
    return {k: a[k] for k in ("bits", "zero", "scale_exp", "act_bits")} | {"frac_bits": a["frac_bits"]}


def _shift_conv(c: "TorchImporter", n: fx.Node) -> None:
    a = _args(n)
    name, shape = _packed(c, n, a)
    inputs = (c.value(a["x"]), name) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    c.emit(ShiftConv2d, n, inputs, weight_shape=shape, stride=_two(a["stride"]), padding=_two(a["padding"]),
           dilation=_two(a["dilation"]), groups=int(a["groups"]), **_attrs(a))


def _shift_linear(c: "TorchImporter", n: fx.Node) -> None:
    a = _args(n)
    name, shape = _packed(c, n, a)
    inputs = (c.value(a["x"]), name) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    c.emit(ShiftLinear, n, inputs, weight_shape=shape, **_attrs(a))


CONVERTERS[torch.ops.edgert.shift_conv2d.default] = _shift_conv
CONVERTERS[torch.ops.edgert.shift_linear.default] = _shift_linear
