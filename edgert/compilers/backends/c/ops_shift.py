"""C emitters of the shift ops (kernels/shift.c): power-of-two weights, fixed-point input, exact sums.

Each layer is two calls. The float input is quantized once into arena scratch (int8 when
``act_bits`` <= 8, else int16), a conv's with its zero padding around every channel, so the conv
kernel never bounds-checks. The layer kernel then sums x_q * m exactly and scales.

Weights stay the packed code stream the IR holds, in flash: ``bits``/8 bytes per weight (0.375 for
3 bits, against 4 for float32), decoded by the kernel. A conv decodes a block of up to BLOCK output
channels' filters into scratch (int32, at most FILTER_BYTES), then gathers the input windows of two
output pixels at a time and dots them with the block's filters two at a time (a 2x2 register block);
a dense layer decodes in its dot product, 8 codes (``bits`` whole bytes) at a time.

The accumulator is int32 when the layer's own weights prove that no sum can overflow it
(2^(act_bits-1) * max over outputs of sum |m| < 2^31), else int64; the sums are exact either way, so
the results are the NumPy reference's integers. The node's ``path`` (shift_add or int_mac) gives the
same integers and does not change the C kernel: on Cortex-M a multiply-accumulate is one cycle.
"""

from __future__ import annotations

import math

import numpy as np

from edgert import ir
from edgert.errors import UnsupportedOpError
from edgert.ops.shift import kernels as shift_kernels
from edgert.ops.shift.register import multipliers

FILES = ("kernels/shift.h", "kernels/shift.c")
FLAGS: dict[str, list[str]] = {"kernels/shift.c": ["-ffp-contract=off"]}
BLOCK = 16  # most conv output channels per block: each input window is gathered once per block
FILTER_BYTES = 8192  # most arena scratch for a block's decoded filters (int32 multipliers)


def _f32(node: ir.Node, value: float) -> str:
    """The float32 value as an exact C literal (a power of two here)."""
    v = np.float32(value)
    if not np.isfinite(v):
        raise UnsupportedOpError(f"{node.op} {node.name!r}: scale {value} overflows float32 "
                                 f"(scale_exp={node.scale_exp}, frac_bits={node.frac_bits})")
    return float(v).hex() + "f"


def acc_ctype(node, graph: ir.Graph, k: int) -> str:
    """int32_t if no partial sum of the layer can leave int32, else int64_t."""
    codes = node.inputs[1]
    if codes in graph.params:  # the actual weights: the largest total |m| of one output
        m = np.abs(multipliers(node, graph.params[codes]).reshape(node.weight_shape[0], -1).astype(np.int64))
        worst = 2 ** (node.act_bits - 1) * int(m.sum(axis=1).max(initial=0))
        return "int32_t" if worst < 2 ** 31 else "int64_t"
    wide = shift_kernels.acc_dtype(k, node.act_bits, node.bits, node.zero) is np.int64
    return "int64_t" if wide else "int32_t"


def conv_block(og: int, taps: int) -> int:
    """Output channels per conv block: up to BLOCK, within the group, while the block's decoded
    filters fit FILTER_BYTES (at least one)."""
    return max(1, min(og, BLOCK, FILTER_BYTES // (4 * taps)))


def _fixed_point(n, ctx, chw: tuple[int, int, int],
                 pad: tuple[int, int, int, int]) -> tuple[str, str, str, int]:
    """Quantize the input (viewed as [C, H, W], padded by top/left/bottom/right) into arena scratch:
    (the call, the scratch pointer, "q8" or "q16", bytes per value)."""
    x = n.inputs[0]
    if ctx.specs[x].dtype != "float32":
        raise UnsupportedOpError(f"{n.op} {n.name!r}: input {x!r} is {ctx.specs[x].dtype}; the C kernel "
                                 "takes float32")
    q, ctype, size = ("q8", "int8_t", 1) if n.act_bits <= 8 else ("q16", "int16_t", 2)
    c, h, w = chw
    t, left, b, r = pad
    xq = ctx.scratch(c * (t + h + b) * (left + w + r) * size, ctype)
    args = [ctx.ptr(x), xq, c, h, w, t, left, b, r, _f32(n, 2.0 ** n.frac_bits), n.act_bits]
    return f"  ek_shift_quantize_{q}({', '.join(map(str, args))});", xq, q, size


def _acc(n, ctx, k: int) -> str:
    return "a32" if acc_ctype(n, ctx.graph, k) == "int32_t" else "a64"


def _bias(n, ctx) -> str:
    return ctx.ptr(n.inputs[2]) if len(n.inputs) == 3 else "0"


def _shift_conv2d(n, ctx) -> str:
    o, cg, kh, kw = n.weight_shape
    _, c, h, w = ctx.shape(n.inputs[0])
    _, _, oh, ow = ctx.shape(n.output)
    t, left, b, r = n.padding
    quant, xq, q, size = _fixed_point(n, ctx, (c, h, w), n.padding)
    taps = cg * kh * kw
    ob = conv_block(o // n.groups, taps)
    filt = ctx.scratch(ob * taps * 4, "int32_t")
    col = ctx.scratch(2 * taps * size, "int8_t" if q == "q8" else "int16_t")  # two windows
    args = [xq, ctx.ptr(n.inputs[1]), _bias(n, ctx), ctx.ptr(n.output), filt, col, ob, c, t + h + b,
            left + w + r, o, oh, ow, kh, kw, n.groups, *n.stride, *n.dilation, n.bits, int(n.zero),
            _f32(n, 2.0 ** (n.scale_exp - n.frac_bits))]
    return quant + "\n" + f"  ek_shift_conv2d_{q}_{_acc(n, ctx, taps)}({', '.join(map(str, args))});"


def _shift_linear(n, ctx) -> str:
    out, k = n.weight_shape
    rows = math.prod(ctx.shape(n.inputs[0])[:-1])
    quant, xq, q, _ = _fixed_point(n, ctx, (1, 1, rows * k), (0, 0, 0, 0))
    args = [xq, ctx.ptr(n.inputs[1]), _bias(n, ctx), ctx.ptr(n.output), rows, k, out, n.bits, int(n.zero),
            _f32(n, 2.0 ** (n.scale_exp - n.frac_bits))]
    return quant + "\n" + f"  ek_shift_linear_{q}_{_acc(n, ctx, k)}({', '.join(map(str, args))});"


EMITTERS = {"shift_conv2d": _shift_conv2d, "shift_linear": _shift_linear}
