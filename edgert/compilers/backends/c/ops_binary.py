"""C emitters of the binary ops: one kernel call per node into kernels/binary.c.

Packed signs keep the artifact's layout (uint64 words, [H, W, words], bit 1 = -1), so the C kernels
compute exactly what the reference does. What the emitter prepares at compile time: weights with their
unused high bits cleared (only when some are set), for "zero" padding each tap's weight sum (the border
correction), and a conv's patch in the arena (the window's words, gathered once per output pixel). A
conv's optional MST schedule (inputs 4-7) changes how the Numba kernel reaches the dot products, never
their values: the C kernel computes every channel directly, so those arrays are not emitted.
bit_flatten is a view (emit.py).
"""

from __future__ import annotations

import numpy as np

from edgert import ir
from edgert.errors import UnsupportedOpError
from edgert.ops.binary import bits
from edgert.ops.binary.nodes import words

FILES = ("kernels/binary.h", "kernels/binary.c")
# binary ops must be exact: y = float(dot) * scale + bias is two roundings in the reference, never an FMA
FLAGS: dict[str, list[str]] = {"kernels/binary.c": ["-ffp-contract=off"]}


def _weight(ctx, name: str, signs: int) -> str:
    """The packed weight, its unused high bits (past ``signs`` per row) cleared: the reference never
    reads them, the kernel XORs whole words. The parameter itself when they are already 0."""
    w = ctx.graph.params.get(name)
    if w is None:
        return ctx.ptr(name)
    mask = bits.pack_last_ref(np.ones(signs, bool))
    clean = np.asarray(w, np.uint64) & mask
    return ctx.ptr(name) if np.array_equal(clean, w) else ctx.const(name + "_masked", clean)


def _bitpack(n, ctx) -> str:
    shape = ctx.shape(n.inputs[0])
    hw = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) == 4 else 1
    groups = bits.pack_groups(n.channels, n.groups)
    return f"  ek_bitpack({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {n.channels}, {hw}, {groups});"


def _sign(n, ctx) -> str:
    return f"  ek_binary_sign({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {ctx.numel(n.output)});"


def _epilogue(n, ctx) -> str:
    """The epilogue's pointer arguments: scale, bias (float) or threshold, flip (bits), then y."""
    return f"{ctx.ptr(n.inputs[2])}, {ctx.ptr(n.inputs[3])}, {ctx.ptr(n.output)}"


def _wsum(ctx, n) -> str:
    """"zero" padding: each tap's weight sum cg - 2 * popcount(w) [O, kh, kw], the +1-input value an
    out-of-bounds tap must not add; NULL ("one" padding, or no padding at all)."""
    w = ctx.graph.params.get(n.inputs[1])
    if n.pad_mode == "one" or not any(n.padding):
        return "0"
    if w is None:
        raise UnsupportedOpError(f"binary_conv2d {n.name!r}: zero padding needs the weight as a parameter")
    cg = n.in_channels // n.groups
    signs = bits.unpack_last_ref(np.asarray(w, np.uint64), cg)  # [O, kh, kw, cg], True = -1
    return ctx.const(n.inputs[1] + "_wsum", (cg - 2 * signs.sum(-1)).astype(np.int32))


def _conv(n, ctx) -> str:
    _, h, wd, nw = ctx.shape(n.inputs[0])
    cg = n.in_channels // n.groups
    if n.output_kind == "float":
        _, o, oh, ow = ctx.shape(n.output)
    else:
        _, oh, ow, _ = ctx.shape(n.output)
        o = n.out_channels
    kh, kw = n.kernel
    t, l, _, _ = n.padding
    wpg = words(cg)
    dense = cg == 1 and n.groups > 1  # the input packed 64 channels to a word (bits.pack_groups)
    in_place = kh * kw == 1 and not any(n.padding) and not dense  # every window one in-bounds pixel: no patch
    patch = "0" if in_place else ctx.scratch(n.groups * kh * kw * wpg * 8, "uint64_t")
    x, w, wsum = ctx.ptr(n.inputs[0]), _weight(ctx, n.inputs[1], cg), _wsum(ctx, n)
    geom = (f"{h}, {wd}, {nw}, {o}, {kh}, {kw}, {wpg}, {cg}, {n.groups}, {n.stride[0]}, {n.stride[1]}, "
            f"{t}, {l}, {oh}, {ow}")
    if n.output_kind == "float":
        return f"  ek_binary_conv2d_float({x}, {w}, {wsum}, {_epilogue(n, ctx)}, {patch},\n    {geom});"
    return (f"  ek_binary_conv2d_bits({x}, {w}, {wsum}, {_epilogue(n, ctx)}, {patch},\n    {geom}, "
            f"{bits.pack_groups(o, n.out_groups)});")


def _dense(n, ctx) -> str:
    k, o = n.in_features, n.out_features
    x, w = ctx.ptr(n.inputs[0]), _weight(ctx, n.inputs[1], k)
    fn = "ek_binary_dense_float" if n.output_kind == "float" else "ek_binary_dense_bits"
    return f"  {fn}({x}, {w}, {_epilogue(n, ctx)}, {words(k)}, {k}, {o});"


def _pool(n: ir.Node, ctx) -> str:
    _, h, wd, nw = ctx.shape(n.inputs[0])
    _, oh, ow, _ = ctx.shape(n.output)
    t, l, _, _ = n.padding
    return (f"  ek_binary_max_pool2d({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {h}, {wd}, {nw}, "
            f"{n.kernel[0]}, {n.kernel[1]}, {n.stride[0]}, {n.stride[1]}, {t}, {l}, {oh}, {ow});")


EMITTERS = {"bitpack": _bitpack, "binary_sign": _sign, "binary_conv2d": _conv, "binary_dense": _dense,
            "binary_max_pool2d": _pool}
