"""C emitters of the float ops: one kernel call per node into kernels/float.c.

Weights are re-laid at compile time for the kernels' register blocks: a conv's as
[groups][output channels in fours][cg*kh*kw][4], a linear's as [outputs in sixteens][K][16], zero-padded
past the last channel. Kernel rows and columns of zeros at the edge of a conv's kernel are dropped
(with the padding they met), so a TF 'same' conv rebuilt with a leading zero tap costs no more than
the original. A relu or clip whose only input is a conv or linear output read by nothing else is
folded into that node's epilogue; the relu itself then only moves the bytes if the emitter did not
give it the same buffer (``ek_copy`` is a no-op when the pointers are equal).
"""

from __future__ import annotations

import math

import numpy as np

from edgert import ir
from edgert.errors import UnsupportedOpError
from edgert.ops.reference import avg_pool_divisor, upsample_source

FILES = ("kernels/float.h", "kernels/float.c")
FLAGS: dict[str, list[str]] = {"kernels/float.c": ["-ffp-contract=fast"]}  # one vfma per multiply-add

CONV_PIXELS = 6  # EK_CONV_PIXELS in float.h
LINEAR_BLOCK = 16  # outputs per block of ek_linear
MAX_RANK = 8  # EK_MAX_RANK in float.c
FUSE_INTO = ("conv2d", "linear")


def _f(v: float) -> str:
    """A float32 C literal (exact, in hex) or an infinity."""
    v = float(np.float32(v))
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return v.hex() + "f"


def _param(n: ir.Node, ctx, k: int) -> np.ndarray:
    name = n.inputs[k]
    if name not in ctx.graph.params:
        raise UnsupportedOpError(f"{n.op} {n.name!r}: input {k} ({name!r}) must be a parameter (a constant "
                                 "array) for the C backend; it is an activation")
    return np.asarray(ctx.graph.params[name])


# ---- fused activations ----

def fused_act(n: ir.Node, ctx) -> tuple[str, float, float] | None:
    """(act, lo, hi) of the relu or clip folded into ``n``'s epilogue, or None."""
    g = ctx.graph
    if n.op not in FUSE_INTO or n.output in g.outputs:
        return None
    readers = [m for m in g.nodes if n.output in m.inputs]
    if len(readers) != 1 or readers[0].inputs != (n.output,):
        return None
    r = readers[0]
    if isinstance(r, ir.Relu):
        return ("EK_ACT_MAX", 0.0, math.inf)
    if isinstance(r, ir.Clip):
        return ("EK_ACT_CLAMP", r.lo, r.hi)
    return None


def _act_args(n: ir.Node, ctx) -> str:
    act = fused_act(n, ctx)
    if act is None:
        return "EK_ACT_NONE, 0.0f, 0.0f"
    return f"{act[0]}, {_f(act[1])}, {_f(act[2])}"


def _folded(n: ir.Node, ctx) -> bool:
    """True when this relu/clip's work was done by its producer's epilogue."""
    prod = next((m for m in ctx.graph.nodes if m.output == n.inputs[0]), None)
    return prod is not None and fused_act(prod, ctx) is not None


# ---- elementwise ----

def _elementwise(kernel: str, extra=lambda n: ""):
    def emit(n: ir.Node, ctx) -> str:
        x, y, count = ctx.ptr(n.inputs[0]), ctx.ptr(n.output), ctx.numel(n.output)
        if n.op in ("relu", "clip") and _folded(n, ctx):
            return f"  ek_copy({x}, {y}, {count});  /* folded into the producer's epilogue */"
        return f"  {kernel}({x}, {y}, {count}{extra(n)});"
    return emit


# ---- conv2d ----

def _trim(w: np.ndarray, pt: int, pl: int, dh: int, dw: int) -> tuple[np.ndarray, int, int]:
    """Drop all-zero kernel rows/columns at the edges: a leading one with the padding it met."""
    while w.shape[2] > 1 and pt >= dh and not w[:, :, 0].any():
        w, pt = w[:, :, 1:], pt - dh
    while w.shape[2] > 1 and not w[:, :, -1].any():
        w = w[:, :, :-1]
    while w.shape[3] > 1 and pl >= dw and not w[:, :, :, 0].any():
        w, pl = w[:, :, :, 1:], pl - dw
    while w.shape[3] > 1 and not w[:, :, :, -1].any():
        w = w[:, :, :, :-1]
    return w, pt, pl


def _geom(c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, groups) -> str:
    vals = dict(c=c, h=h, w=w, o=o, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl,
                groups=groups)
    return "&(const ek_conv_geom){" + ", ".join(f".{k} = {v}" for k, v in vals.items()) + "}"


def _conv2d(n: ir.Conv2d, ctx) -> str:
    w = _param(n, ctx, 1).astype(np.float32)
    b = _param(n, ctx, 2).astype(np.float32) if len(n.inputs) == 3 else None
    _, c, h, wd = ctx.shape(n.inputs[0])
    _, o, oh, ow = ctx.shape(n.output)
    (sh, sw), (dh, dw), g = n.stride, n.dilation, n.groups
    w, pt, pl = _trim(w, n.padding[0], n.padding[1], dh, dw)
    kh, kw = w.shape[2:]
    geom = _geom(c, h, wd, o, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, g)
    x, y, act = ctx.ptr(n.inputs[0]), ctx.ptr(n.output), _act_args(n, ctx)
    if g == c and c > 1:  # depthwise: one plane per output channel
        wsym = ctx.const(n.inputs[1] + "_dw", w.reshape(o, kh * kw))
        bsym = ctx.ptr(n.inputs[2]) if b is not None else "NULL"
        pad1 = ((kh, kw, sh, sw, dh, dw, pt, pl) == (3, 3, 1, 1, 1, 1, 1, 1) and (oh, ow) == (h, wd)
                and min(h, wd) >= 2)  # ek_dw3x3_pad1: needs no row of zeros
        zero = "NULL" if pad1 else ctx.scratch(wd * 4)
        return f"  ek_dwconv2d({x}, {wsym}, {bsym}, {y}, {zero}, {geom}, {act});"
    cg, og = c // g, o // g
    nob, k = -(-og // 4), cg * kh * kw
    wg = np.zeros((g, nob * 4, k), np.float32)
    wg[:, :og] = w.reshape(g, og, k)
    wt = wg.reshape(g, nob, 4, k).transpose(0, 1, 3, 2)  # [g][ob][k][4]
    wsym = ctx.const(n.inputs[1] + "_t", wt)
    bsym = "NULL"
    if b is not None:
        bp = np.zeros((g, nob * 4), np.float32)
        bp[:, :og] = b.reshape(g, og)
        bsym = ctx.const(n.inputs[2] + "_p", bp) if og % 4 else ctx.ptr(n.inputs[2])
    direct = (kh, kw, sh, sw, pt, pl) == (1, 1, 1, 1, 0, 0) and (oh, ow) == (h, wd)
    patch = "NULL"
    if not direct or (oh * ow) % CONV_PIXELS:
        patch = ctx.scratch(CONV_PIXELS * k * 4)
    return f"  ek_conv2d({x}, {wsym}, {bsym}, {y}, {patch}, {geom}, {act});"


def _linear(n: ir.Linear, ctx) -> str:
    w = _param(n, ctx, 1).astype(np.float32)
    o, k = w.shape
    nob = -(-o // LINEAR_BLOCK)
    wp = np.zeros((nob * LINEAR_BLOCK, k), np.float32)
    wp[:o] = w
    wsym = ctx.const(n.inputs[1] + "_t", wp.reshape(nob, LINEAR_BLOCK, k).transpose(0, 2, 1))  # [ob][k][16]
    bsym = "NULL"
    if len(n.inputs) == 3:
        bp = np.zeros(nob * LINEAR_BLOCK, np.float32)
        bp[:o] = _param(n, ctx, 2)
        bsym = ctx.const(n.inputs[2] + "_p", bp) if o % LINEAR_BLOCK else ctx.ptr(n.inputs[2])
    rows = ctx.numel(n.inputs[0]) // k
    return (f"  ek_linear({ctx.ptr(n.inputs[0])}, {wsym}, {bsym}, {ctx.ptr(n.output)}, {rows}, {k}, {o}, "
            f"{_act_args(n, ctx)});")


def _batch_norm(n: ir.BatchNorm, ctx) -> str:
    gamma, beta, mean, var = (_param(n, ctx, i).astype(np.float64) for i in range(1, 5))
    scale = gamma / np.sqrt(var + n.eps)
    shift = beta - mean * scale
    shape = ctx.shape(n.inputs[0])
    s = ctx.const(n.name + "_scale", scale.astype(np.float32))
    t = ctx.const(n.name + "_shift", shift.astype(np.float32))
    return (f"  ek_scale_shift({ctx.ptr(n.inputs[0])}, {s}, {t}, {ctx.ptr(n.output)}, {shape[1]}, "
            f"{math.prod(shape[2:])});")


# ---- pools ----

def _pool_geom(n, ctx, dilation=(1, 1)) -> tuple[str, tuple[int, int, int, int, int]]:
    _, c, h, w = ctx.shape(n.inputs[0])
    _, _, oh, ow = ctx.shape(n.output)
    (kh, kw), (sh, sw), (dh, dw) = n.kernel, n.stride, dilation
    pt, pl = n.padding[0], n.padding[1]
    vals = dict(c=c, h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl)
    return "&(const ek_pool_geom){" + ", ".join(f".{k} = {v}" for k, v in vals.items()) + "}", (h, w, oh, ow)


def _max_pool2d(n: ir.MaxPool2d, ctx) -> str:
    geom, _ = _pool_geom(n, ctx, n.dilation)
    return f"  ek_max_pool2d({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {geom});"


def _avg_pool2d(n: ir.AvgPool2d, ctx) -> str:
    geom, (h, w, oh, ow) = _pool_geom(n, ctx)
    div = ctx.const(n.name + "_div", avg_pool_divisor(n, h, w, (oh, ow)).astype(np.float32))
    return f"  ek_avg_pool2d({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {geom}, {div});"


def _adaptive_avg_pool2d(n: ir.AdaptiveAvgPool2d, ctx) -> str:
    _, c, h, w = ctx.shape(n.inputs[0])
    oh, ow = n.output_size
    return (f"  ek_adaptive_avg_pool2d({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {c}, {h}, {w}, {oh}, "
            f"{ow});")


# ---- add, concat, softmax ----

def broadcast_strides(out: tuple[int, ...], *shapes: tuple[int, ...]) -> tuple[list[int], list[list[int]]]:
    """Dims of ``out`` and each input's element strides along them (0 where it broadcasts), with
    size-1 dims dropped and neighbours that every input walks alike merged."""
    strides = []
    for s in shapes:
        s = (1,) * (len(out) - len(s)) + tuple(s)
        st = [math.prod(s[i + 1:]) for i in range(len(s))]
        strides.append([0 if d == 1 else t for d, t in zip(s, st)])
    return _merged(list(out), *strides)


def _ints(v: list[int]) -> str:
    return "(const int[]){" + ", ".join(str(int(x)) for x in v) + "}"


def _broadcasting(kernel: str):
    """add, mul, sub, div: one kernel call over the merged broadcast dims."""
    def emit(n: ir.Node, ctx) -> str:
        if any(ctx.specs[v].dtype != "float32" for v in (*n.inputs, n.output)):
            raise UnsupportedOpError(f"{n.op} {n.name!r}: the C backend computes on float32 values only")
        dims, (sa, sb) = broadcast_strides(ctx.shape(n.output), ctx.shape(n.inputs[0]), ctx.shape(n.inputs[1]))
        _check_rank(n, dims)
        assert sa[-1] in (0, 1) and sb[-1] in (0, 1), (dims, sa, sb)
        return (f"  {kernel}({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.inputs[1])}, {ctx.ptr(n.output)}, {len(dims)}, "
                f"{_ints(dims)}, {_ints(sa)}, {_ints(sb)});")
    return emit


def _prelu(n: ir.Prelu, ctx) -> str:
    shape = ctx.shape(n.inputs[0])
    slopes = ctx.shape(n.inputs[1])[0]
    planes = math.prod(shape[:2]) if slopes > 1 else 1
    return (f"  ek_prelu({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.inputs[1])}, {ctx.ptr(n.output)}, {planes}, {slopes}, "
            f"{ctx.numel(n.output) // planes});")


def _merged(dims: list[int], *strides: list[int]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that every stride list steps alike."""
    keep = [i for i, d in enumerate(dims) if d != 1] or [len(dims) - 1]
    dims = [dims[i] for i in keep]
    strides = [[st[i] for i in keep] for st in strides]
    i = len(dims) - 1
    while i > 0:  # merge dim i into i - 1 when every input steps dim i - 1 as dims[i] steps of dim i
        if all(st[i - 1] == st[i] * dims[i] for st in strides):
            dims[i - 1] *= dims[i]
            for st in strides:
                st[i - 1] = st[i]
                del st[i]
            del dims[i]
        i -= 1
    return dims, strides


def _check_rank(n: ir.Node, dims: list[int]) -> None:
    if len(dims) > MAX_RANK:
        raise UnsupportedOpError(f"{n.op} {n.name!r}: a layout over {len(dims)} dims; the C backend takes up "
                                 f"to {MAX_RANK}")


def _c_order(shape) -> list[int]:
    return [math.prod(shape[i + 1:]) for i in range(len(shape))]


def _transpose(n: ir.Transpose, ctx) -> str:
    shape = ctx.shape(n.inputs[0])
    st = _c_order(shape)
    dims, (strides,) = _merged([shape[a] for a in n.perm], [st[a] for a in n.perm])
    _check_rank(n, dims)
    return (f"  ek_permute({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {len(dims)}, {_ints(dims)}, "
            f"{_ints(strides)});")


def _pad(n: ir.Pad, ctx) -> str:
    shape, out = ctx.shape(n.inputs[0]), ctx.shape(n.output)
    ys = _c_order(out)
    offset = sum(b * s for b, s in zip(n.before, ys))
    keep = [i for i, d in enumerate(shape) if d != 1] or [len(shape) - 1]
    dims, strides = [shape[i] for i in keep], [ys[i] for i in keep]
    if strides[-1] != 1:  # the input's last dim has size 1: its rows are single values
        dims, strides = dims + [1], strides + [1]
    return (f"  ek_pad({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {_f(n.value)}, {ctx.numel(n.output)}, "
            f"{len(dims)}, {_ints(dims)}, {_ints(strides)}, {offset});")


def _reduce(n: ir.Node, ctx) -> str:
    shape = list(ctx.shape(n.inputs[0]))
    kept = [1 if i in n.axes else d for i, d in enumerate(shape)]
    ys = [0 if i in n.axes else s for i, s in enumerate(_c_order(kept))]
    dims, (xs, ys) = _merged(shape, _c_order(shape), ys)
    _check_rank(n, dims)
    scale = 1.0 / math.prod(shape[a] for a in n.axes) if isinstance(n, ir.Mean) else 1.0
    return (f"  ek_reduce_sum({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {ctx.numel(n.output)}, {len(dims)}, "
            f"{_ints(dims)}, {_ints(ys)}, {_f(scale)});")


def _layer_norm(n: ir.LayerNorm, ctx) -> str:
    shape = ctx.shape(n.inputs[0])
    inner = math.prod(shape[-n.axes:])
    gamma = ctx.ptr(n.inputs[1]) if len(n.inputs) > 1 else "NULL"
    beta = ctx.ptr(n.inputs[2]) if len(n.inputs) > 2 else "NULL"
    return (f"  ek_layer_norm({ctx.ptr(n.inputs[0])}, {gamma}, {beta}, {ctx.ptr(n.output)}, "
            f"{ctx.numel(n.output) // inner}, {inner}, {_f(n.eps)});")


def _conv_transpose2d(n: ir.ConvTranspose2d, ctx) -> str:
    w = _param(n, ctx, 1).astype(np.float32)  # [c][o][kh][kw]
    _, c, h, wd = ctx.shape(n.inputs[0])
    _, o, oh, ow = ctx.shape(n.output)
    kh, kw = w.shape[2:]
    wsym = ctx.const(n.inputs[1] + "_t", w.transpose(1, 2, 3, 0))  # [o][kh][kw][c]: c innermost, as x is read
    bsym = ctx.ptr(n.inputs[2]) if len(n.inputs) == 3 else "NULL"
    geom = _geom(c, h, wd, o, oh, ow, kh, kw, *n.stride, 1, 1, *n.padding, 1)
    return f"  ek_conv_transpose2d({ctx.ptr(n.inputs[0])}, {wsym}, {bsym}, {ctx.ptr(n.output)}, {geom});"


def _upsample(n: ir.Upsample, ctx) -> str:
    _, c, h, w = ctx.shape(n.inputs[0])
    oh, ow = n.size
    args = []
    for axis, n_in, n_out in (("h", h, oh), ("w", w, ow)):
        i0, i1, f = upsample_source(n_in, n_out, n)
        args.append(ctx.const(f"{n.name}_{axis}0", i0.astype(np.int32)))
        if n.mode == "nearest":
            args += ["NULL", "NULL"]
        else:
            args += [ctx.const(f"{n.name}_{axis}1", i1.astype(np.int32)),
                     ctx.const(f"{n.name}_f{axis}", f.astype(np.float32))]
    return (f"  ek_upsample({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {c}, {h}, {w}, {oh}, {ow}, "
            f"{', '.join(args)});")


def _matmul(n: ir.MatMul, ctx) -> str:
    a, b = ctx.shape(n.inputs[0]), ctx.shape(n.inputs[1])
    return (f"  ek_matmul({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.inputs[1])}, {ctx.ptr(n.output)}, "
            f"{math.prod(a[:-2])}, {a[-2]}, {a[-1]}, {b[-1]});")


def _concat(n: ir.Concat, ctx) -> str:
    out = ctx.shape(n.output)
    a = n.axis
    item = np.dtype(ctx.specs[n.output].dtype).itemsize
    outer, inner = math.prod(out[:a]), math.prod(out[a + 1:])
    y, lines, off = ctx.ptr(n.output), [], 0
    for v in n.inputs:
        d = ctx.shape(v)[a]
        lines.append(f"  ek_concat_part({ctx.ptr(v)}, {y} + {off * inner}, {outer}, {d * inner * item}, "
                     f"{out[a] * inner * item});")
        off += d
    return "\n".join(lines)


def _softmax(n: ir.Softmax, ctx) -> str:
    s, a = ctx.shape(n.inputs[0]), n.axis
    return (f"  ek_softmax({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {math.prod(s[:a])}, {s[a]}, "
            f"{math.prod(s[a + 1:])});")


EMITTERS = {
    "conv2d": _conv2d,
    "linear": _linear,
    "batch_norm": _batch_norm,
    "relu": _elementwise("ek_relu"),
    "clip": _elementwise("ek_clip", lambda n: f", {_f(n.lo)}, {_f(n.hi)}"),
    "sigmoid": _elementwise("ek_sigmoid"),
    "tanh": _elementwise("ek_tanh"),
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "add": _broadcasting("ek_add"),
    "mul": _broadcasting("ek_mul"),
    "sub": _broadcasting("ek_sub"),
    "div": _broadcasting("ek_div"),
    "silu": _elementwise("ek_silu"),
    "hardswish": _elementwise("ek_hardswish"),
    "hardsigmoid": _elementwise("ek_hardsigmoid", lambda n: f", {_f(n.alpha)}, {_f(n.beta)}"),
    "gelu": lambda n, ctx: _elementwise("ek_gelu_tanh" if n.approximate == "tanh" else "ek_gelu")(n, ctx),
    "leaky_relu": _elementwise("ek_leaky_relu", lambda n: f", {_f(n.slope)}"),
    "prelu": _prelu,
    "transpose": _transpose,
    "pad": _pad,
    "mean": _reduce,
    "sum": _reduce,
    "layer_norm": _layer_norm,
    "conv_transpose2d": _conv_transpose2d,
    "upsample": _upsample,
    "matmul": _matmul,
    "concat": _concat,
    "softmax": _softmax,
}
