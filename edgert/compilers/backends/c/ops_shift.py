"""C emitters of the shift ops (kernels/shift.c): power-of-two weights, fixed-point input, exact sums.

Each layer is two calls. The float input is quantized once into arena scratch (int8 when
``act_bits`` <= 8, else int16), a conv's with its zero padding around every channel, so the conv
kernel never bounds-checks. The layer kernel then sums x_q * m exactly and scales.

Weights stay the packed code stream the IR holds, in flash: ``bits``/8 bytes per weight (0.375 for
3 bits, against 4 for float32), decoded by the kernel with the code width's decoder (passed to it,
so a model links only the widths it uses; 8 codes, ``bits`` whole bytes, at a time). A conv decodes
a block of up to BLOCK output channels' filters into scratch (at most FILTER_BYTES), then gathers
the input windows of two output pixels at a time and dots them with the block's filters two at a
time (a 2x2 register block). A dense layer goes through its input in chunks of CHUNK, decoding two
rows' weights for a chunk at a time. When every multiplier fits 16 bits (``bits`` <= 4, or the zero
code: |m| <= 2^14) and the sums int32, weights and inputs are int16 and Armv7E-M cores (Cortex-M4,
M7) do two taps per SMLAD.

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
FILTER_BYTES = 8192  # most arena scratch for a block's decoded filters
CHUNK = 128  # inputs per chunk of a dense layer (its scratch holds two rows' weights for a chunk)


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


def conv_block(og: int, taps: int, filter_bytes: int = 4) -> int:
    """Output channels per conv block: up to BLOCK, within the group, while the block's decoded
    filters (``taps`` rounded up to even, ``filter_bytes`` each) fit FILTER_BYTES (at least one)."""
    return max(1, min(og, BLOCK, FILTER_BYTES // (filter_bytes * (taps + taps % 2))))


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


def _kernel(n, ctx, k: int, q: str, size: int) -> tuple[str, int, str, int, str]:
    """(kernel suffix, filter bytes, filter ctype, window/chunk bytes per value, its ctype): 16-bit
    filters and windows (SMLAD on Armv7E-M) when every multiplier fits, |m| <= 2^14, and the sums
    int32; else int32 filters, windows of the x_q type and the sums the weights need."""
    acc = _acc(n, ctx, k)
    if acc == "a32" and (n.bits <= 4 or n.zero):
        return f"{q}_h", 2, "int16_t", 2, "int16_t"
    return f"{q}_{acc}", 4, "int32_t", size, ("int8_t" if q == "q8" else "int16_t")


def _shift_conv2d(n, ctx) -> str:
    o, cg, kh, kw = n.weight_shape
    _, c, h, w = ctx.shape(n.inputs[0])
    _, _, oh, ow = ctx.shape(n.output)
    t, left, b, r = n.padding
    quant, xq, q, size = _fixed_point(n, ctx, (c, h, w), n.padding)
    taps = cg * kh * kw
    ts = taps + taps % 2
    kernel, fsize, ftype, csize, ctype = _kernel(n, ctx, taps, q, size)
    ob = conv_block(o // n.groups, taps, fsize)
    filt = ctx.scratch(ob * ts * fsize, ftype)
    col = ctx.scratch(2 * ts * csize, ctype)  # two windows
    args = [xq, ctx.ptr(n.inputs[1]), f"ek_shift_decode{8 * fsize}_b{n.bits}", _bias(n, ctx),
            ctx.ptr(n.output), filt, col, ob, c, t + h + b, left + w + r, o, oh, ow, kh, kw, n.groups,
            *n.stride, *n.dilation, n.bits, int(n.zero), _f32(n, 2.0 ** (n.scale_exp - n.frac_bits))]
    return quant + "\n" + f"  ek_shift_conv2d_{kernel}({', '.join(map(str, args))});"


def _shift_linear(n, ctx) -> str:
    out, k = n.weight_shape
    rows = math.prod(ctx.shape(n.inputs[0])[:-1])
    quant, xq, q, size = _fixed_point(n, ctx, (1, 1, rows * k), (0, 0, 0, 0))
    kernel, fsize, ftype, csize, ctype = _kernel(n, ctx, k, q, size)
    ch = min(k + k % 2, CHUNK)
    wc = ctx.scratch(2 * ch * fsize, ftype)
    xc = ctx.scratch(ch * csize, ctype)
    wide = kernel.endswith("a64")
    acc = ctx.scratch(out * (8 if wide else 4), "int64_t" if wide else "int32_t")
    args = [xq, ctx.ptr(n.inputs[1]), f"ek_shift_decode{8 * fsize}_b{n.bits}", _bias(n, ctx),
            ctx.ptr(n.output), wc, xc, acc, ch, rows, k, out, n.bits, int(n.zero),
            _f32(n, 2.0 ** (n.scale_exp - n.frac_bits))]
    return quant + "\n" + f"  ek_shift_linear_{kernel}({', '.join(map(str, args))});"


EMITTERS = {"shift_conv2d": _shift_conv2d, "shift_linear": _shift_linear}
