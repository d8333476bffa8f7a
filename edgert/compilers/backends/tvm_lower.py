"""Lower an ir.Graph to a Relax IRModule: one TE PrimFunc per node, named after the node.

``main(<graph inputs>, <params in sorted(graph.params) order>)`` returns a tuple of the graph outputs.
Parameters are runtime arguments, never constants, so adaptation can replace them without recompiling.
A ``None`` batch dimension becomes one symbolic ``tirx.Var`` named ``n``, shared by every input.

Each node is emitted with ``BlockBuilder.emit_te(..., primfunc_name_hint=<sanitized node name>)``, so
each PrimFunc (and each fused kernel built from PrimFuncs) can be traced back to IR nodes.
The TE definitions below follow PyTorch exactly, including its ceil_mode and avg-pool divisor rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from edgert import ir
from edgert._tvm import import_tvm
from edgert.compilers.backends import cpu_tiles
from edgert.errors import InternalError, UnsupportedOpError

tvm = import_tvm()
from tvm import relax, te, tirx, topi  # noqa: E402

NEG_INF = float("-inf")
NODE_ATTR = "edgert.node"  # PrimFunc attribute: the IR node it computes


def sanitize(name: str) -> str:
    """A C-identifier-safe version of a node name (what PrimFuncs and kernels are called)."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return s if s and not s[0].isdigit() else "k_" + s


def _i64(v) -> "tirx.PrimExpr":
    return tirx.const(int(v), "int64")


# ---- TE definitions, one per op kind --------------------------------------------------------------

def conv2d_te(x, w, b=None, *, node: ir.Conv2d):
    y = topi.nn.conv(x, w, node.stride, node.padding, node.dilation, node.groups, "NCHW", "OIHW")
    return _bias_te(y, b)


def pack_weight_te(w, *, lanes: int):
    """OIHW -> [O/lanes, I, kh, kw, lanes]: the lanes output channels of one vector side by side."""
    o, i, kh, kw = (int(d) for d in w.shape)
    return te.compute((o // lanes, i, kh, kw, lanes),
                      lambda oo, c, h, v, oi: w[oo * lanes + oi, c, h, v], name="packed_weight")


def _blocked_index(t, n, c, h, v, lanes: int):
    """Element (n, c, h, v) of a channel-blocked tensor [N, C/lanes, H, W, lanes]."""
    return t[n, c // lanes, h, v, c % lanes]


class _Nchw:
    """Reads a 4D NCHW tensor or a channel-blocked 5D one by NCHW indices (what a pool reads)."""

    def __init__(self, t):
        self.t, self.dtype = t, t.dtype
        self.lanes = int(t.shape[4]) if len(t.shape) == 5 else None
        c = _i64(int(t.shape[1]) * self.lanes) if self.lanes else t.shape[1]
        self.shape = (t.shape[0], c, t.shape[2], t.shape[3])

    def __getitem__(self, i):
        return _blocked_index(self.t, *i, self.lanes) if self.lanes else self.t[i]


def _pad_te(x, t: int, l: int, pb: int, pr: int):
    """x zero-padded by (top, left, bottom, right) on its spatial axes, NCHW or [N, C/L, H, W, L]."""
    h_in, w_in = int(x.shape[2]), int(x.shape[3])
    zero = tirx.const(0.0, x.dtype)
    shape = (x.shape[0], x.shape[1], h_in + t + pb, w_in + l + pr) + tuple(x.shape[4:])

    def f(n, c, h, v, *lane):
        inside = tirx.all(h >= t, h < h_in + t, v >= l, v < w_in + l)
        return tirx.if_then_else(inside, x[(n, c, h - t, v - l) + lane], zero)

    return te.compute(shape, f, name="pad_temp")


def _bias_te(y, b, *, lanes: int | None = None):
    if b is None:
        return y
    if lanes is None:
        return te.compute(y.shape, lambda n, c, h, v: y[n, c, h, v] + b[c], name="bias_add")
    return te.compute(y.shape, lambda n, c, h, v, i: y[n, c, h, v, i] + b[c * lanes + i], name="bias_add")


def conv2d_packed_te(x, wp, b=None, *, node: ir.Conv2d, out: ir.TensorSpec, blocked_in: bool = False,
                     blocked_out: bool = False):
    """conv2d reading weights packed by pack_weight_te, + bias. The input and the output may each be
    channel-blocked ([N, C/lanes, H, W, lanes]); a blocked output is block ``conv2d_blocked``, else
    ``conv2d_packed``."""
    n_oo, cg, kh, kw, lanes = (int(d) for d in wp.shape)
    per_group = n_oo * lanes // node.groups
    (sh, sw), (dh, dw), (t, l, pb, pr) = node.stride, node.dilation, node.padding
    pad = _pad_te(x, t, l, pb, pr)
    rc = te.reduce_axis((0, cg), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def tap(n, o, h, v):
        c, hh, vv = o // per_group * cg + rc, h * sh + ry * dh, v * sw + rx * dw
        xv = _blocked_index(pad, n, c, hh, vv, lanes) if blocked_in else pad[n, c, hh, vv]
        return te.sum(xv * wp[o // lanes, rc, ry, rx, o % lanes], axis=[rc, ry, rx])

    o, oh, ow = (int(d) for d in out.shape[1:])
    if not blocked_out:
        y = te.compute((x.shape[0], _i64(o), _i64(oh), _i64(ow)), tap, name="conv2d_packed")
        return _bias_te(y, b)
    y = te.compute((x.shape[0], _i64(o // lanes), _i64(oh), _i64(ow), _i64(lanes)),
                   lambda n, oo, h, v, oi: tap(n, oo * lanes + oi, h, v), name="conv2d_blocked")
    return _bias_te(y, b, lanes=lanes)


def depthwise_blocked_te(x, wp, b=None, *, node: ir.Conv2d):
    """Depthwise conv (one filter per channel) on a channel-blocked input, weights packed by
    pack_weight_te ([C/lanes, 1, kh, kw, lanes]); each tap is one vector of lanes channels."""
    _, _, kh, kw, lanes = (int(d) for d in wp.shape)
    (sh, sw), (dh, dw), (t, l, pb, pr) = node.stride, node.dilation, node.padding
    pad = _pad_te(x, t, l, pb, pr)
    oh = (int(pad.shape[2]) - dh * (kh - 1) - 1) // sh + 1
    ow = (int(pad.shape[3]) - dw * (kw - 1) - 1) // sw + 1
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    y = te.compute((x.shape[0], x.shape[1], _i64(oh), _i64(ow), x.shape[4]),
                   lambda n, c, h, v, i: te.sum(pad[n, c, h * sh + ry * dh, v * sw + rx * dw, i]
                                                * wp[c, 0, ry, rx, i], axis=[ry, rx]),
                   name="depthwise_blocked")
    return _bias_te(y, b, lanes=lanes)


def packs_weight(node: ir.Node, w_shape: tuple, lanes: int | None) -> bool:
    """Whether conv ``node`` vectorizes over output channels (weights packed once, at set_params)."""
    if lanes is None or not isinstance(node, ir.Conv2d):
        return False
    return cpu_tiles.packs_weight(w_shape[0] // node.groups, lanes)


def linear_te(x, w, b=None):
    """y[..., o] = sum_k x[..., k] * w[o, k] (+ b[o])."""
    k = te.reduce_axis((0, x.shape[-1]), name="k")
    shape = tuple(x.shape[:-1]) + (w.shape[0],)
    y = te.compute(shape, lambda *i: te.sum(x[i[:-1] + (k,)] * w[i[-1], k], axis=k), name="matmul")
    if b is None:
        return y
    return te.compute(shape, lambda *i: y[i] + b[i[-1]], name="bias_add")


def batch_matmul_te(a, b):
    """y[..., m, n] = sum_k a[..., m, k] * b[..., k, n] (not named "matmul": that block is Linear's
    dense schedule, which assumes a constant [O, K] weight)."""
    k = te.reduce_axis((0, a.shape[-1]), name="k")
    shape = tuple(a.shape[:-1]) + (b.shape[-1],)
    return te.compute(shape, lambda *i: te.sum(a[i[:-1] + (k,)] * b[i[:-2] + (k, i[-1])], axis=k),
                      name="batch_matmul")


def batch_norm_te(x, gamma, beta, mean, var, *, eps: float):
    """(x - mean) * (gamma / sqrt(var + eps)) + beta over axis 1."""
    dt = x.dtype

    def f(*i):
        c = i[1]
        scale = gamma[c] / te.sqrt(var[c] + tirx.const(eps, dt))
        return (x[i] - mean[c]) * scale + beta[c]

    return te.compute(x.shape, f, name="batch_norm")


def _pool_geometry(x, out, kernel, stride, padding, dilation):
    kh, kw = kernel
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    t, l = padding[0], padding[1]
    h_in, w_in = x.shape[2], x.shape[3]

    def at(i, j):
        hh = i * stride[0] + rh * dilation[0] - t
        ww = j * stride[1] + rw * dilation[1] - l
        inside = tirx.all(hh >= 0, hh < h_in, ww >= 0, ww < w_in)
        return hh, ww, inside

    return rh, rw, at, out.shape[2:4]


def max_pool2d_te(x, *, node: ir.MaxPool2d, out: ir.TensorSpec):
    """Max over windows; padding and the ceil_mode overhang read as -inf (never selected)."""
    x = _Nchw(x)
    rh, rw, at, (oh, ow) = _pool_geometry(x, out, node.kernel, node.stride, node.padding, node.dilation)
    lowest = tirx.const(NEG_INF, x.dtype)

    def f(n, c, i, j):
        hh, ww, inside = at(i, j)
        v = tirx.if_then_else(inside, x[n, c, hh, ww], lowest)
        return te.max(v, axis=[rh, rw])

    return te.compute((x.shape[0], x.shape[1], oh, ow), f, name="max_pool2d")


def avg_pool2d_te(x, *, node: ir.AvgPool2d, out: ir.TensorSpec):
    """Window sum / PyTorch's divisor: the window clipped to input+padding (count_include_pad) or input."""
    x = _Nchw(x)
    rh, rw, at, (oh, ow) = _pool_geometry(x, out, node.kernel, node.stride, node.padding, (1, 1))
    zero = tirx.const(0.0, x.dtype)
    h_in, w_in = int(x.shape[2]), int(x.shape[3])
    (kh, kw), (sh, sw), (t, l, b, r) = node.kernel, node.stride, node.padding

    def f(n, c, i, j):
        hh, ww, inside = at(i, j)
        v = tirx.if_then_else(inside, x[n, c, hh, ww], zero)
        return te.sum(v, axis=[rh, rw])

    s = te.compute((x.shape[0], x.shape[1], oh, ow), f, name="window_sum")

    def div(i, j):
        h0, w0 = i * sh - t, j * sw - l
        h1, w1 = tirx.min(h0 + kh, h_in + b), tirx.min(w0 + kw, w_in + r)
        if not node.count_include_pad:
            h0, w0 = tirx.max(h0, 0), tirx.max(w0, 0)
            h1, w1 = tirx.min(h1, h_in), tirx.min(w1, w_in)
        return ((h1 - h0) * (w1 - w0)).astype(x.dtype)

    return te.compute(s.shape, lambda n, c, i, j: s[n, c, i, j] / div(i, j), name="avg_pool2d")


def adaptive_avg_pool2d_te(x, *, node: ir.AdaptiveAvgPool2d):
    """Window i spans [floor(i*H/oh), ceil((i+1)*H/oh)), as in PyTorch."""
    x = _Nchw(x)
    (oh, ow), h_in, w_in = node.output_size, int(x.shape[2]), int(x.shape[3])
    # window bounds are compile-time numbers; the largest window fixes the reduction extent
    hs = [((i * h_in) // oh, -(-((i + 1) * h_in) // oh)) for i in range(oh)]
    ws = [((j * w_in) // ow, -(-((j + 1) * w_in) // ow)) for j in range(ow)]
    kh, kw = max(e - s for s, e in hs), max(e - s for s, e in ws)
    rh = te.reduce_axis((0, kh), name="rh")
    rw = te.reduce_axis((0, kw), name="rw")
    zero = tirx.const(0.0, x.dtype)

    def start(i, n_in, n_out):
        return tirx.floordiv(i * n_in, n_out)

    def end(i, n_in, n_out):
        return tirx.floordiv((i + 1) * n_in + n_out - 1, n_out)

    def f(n, c, i, j):
        h0, w0 = start(i, h_in, oh), start(j, w_in, ow)
        h1, w1 = end(i, h_in, oh), end(j, w_in, ow)
        inside = tirx.all(h0 + rh < h1, w0 + rw < w1)
        return te.sum(tirx.if_then_else(inside, x[n, c, h0 + rh, w0 + rw], zero), axis=[rh, rw])

    s = te.compute((x.shape[0], x.shape[1], oh, ow), f, name="window_sum")

    def mean(n, c, i, j):
        cnt = (end(i, h_in, oh) - start(i, h_in, oh)) * (end(j, w_in, ow) - start(j, w_in, ow))
        return s[n, c, i, j] / cnt.astype(x.dtype)

    return te.compute(s.shape, mean, name="adaptive_avg_pool2d")


def reshape_te(x, *, shape: tuple):
    """Row-major reshape keeping axis 0 (the batch, possibly symbolic)."""
    in_dims = [int(d) for d in x.shape[1:]]
    out_dims = [int(d) for d in shape]

    def f(n, *j):
        flat = _i64(0)
        for d, idx in zip(out_dims, j):
            flat = flat * d + idx
        src = []
        for d in reversed(in_dims):
            src.append(tirx.floormod(flat, d))
            flat = tirx.floordiv(flat, d)
        return x[(n,) + tuple(reversed(src))]

    return te.compute((x.shape[0],) + tuple(_i64(d) for d in out_dims), f, name="reshape")


def softmax_te(x, *, axis: int):
    return topi.nn.softmax(x, axis)


def _elementwise(x, f, name: str):
    return te.compute(x.shape, lambda *i: f(x[i]), name=name)


def silu_te(x):
    return _elementwise(x, lambda v: v * te.sigmoid(v), "silu")


def hardswish_te(x):
    zero, three, six = (tirx.const(c, x.dtype) for c in (0.0, 3.0, 6.0))
    return _elementwise(x, lambda v: v * tirx.min(tirx.max(v + three, zero), six) / six, "hardswish")


def hardsigmoid_te(x, *, alpha: float, beta: float):
    a, b, zero, one = (tirx.const(c, x.dtype) for c in (alpha, beta, 0.0, 1.0))
    return _elementwise(x, lambda v: tirx.min(tirx.max(a * v + b, zero), one), "hardsigmoid")


def gelu_te(x, *, approximate: str):
    half, one = tirx.const(0.5, x.dtype), tirx.const(1.0, x.dtype)
    if approximate == "tanh":
        k, c = tirx.const((2.0 / 3.141592653589793) ** 0.5, x.dtype), tirx.const(0.044715, x.dtype)
        return _elementwise(x, lambda v: half * v * (one + te.tanh(k * (v + c * v * v * v))), "gelu")
    r = tirx.const(0.5 ** 0.5, x.dtype)
    return _elementwise(x, lambda v: half * v * (one + te.erf(v * r)), "gelu")


def leaky_relu_te(x, *, slope: float):
    zero, s = tirx.const(0.0, x.dtype), tirx.const(slope, x.dtype)
    return _elementwise(x, lambda v: tirx.Select(v >= zero, v, v * s), "leaky_relu")


def prelu_te(x, slope):
    zero = tirx.const(0.0, x.dtype)
    per_channel = int(slope.shape[0]) > 1

    def f(*i):
        s = slope[i[1]] if per_channel else slope[0]
        return tirx.Select(x[i] >= zero, x[i], x[i] * s)

    return te.compute(x.shape, f, name="prelu")


def pad_te(x, *, node: ir.Pad):
    return topi.nn.pad(x, list(node.before), list(node.after), node.value, name="pad")


def _count(x, axes) -> int:
    n = 1
    for a in axes:
        n *= int(x.shape[a])
    return n


def reduce_te(x, *, axes: tuple, keepdim: bool, mean: bool):
    y = topi.sum(x, axis=list(axes), keepdims=keepdim)
    if not mean:
        return y
    count = tirx.const(float(_count(x, axes)), x.dtype)
    return te.compute(y.shape, lambda *i: y[i] / count, name="mean")


def layer_norm_te(x, *affine, axes: int, eps: float):
    """Two passes over the last ``axes`` axes: the mean, then the mean squared deviation from it."""
    rank, dt = len(x.shape), x.dtype
    lead = rank - axes
    count = tirx.const(float(_count(x, range(lead, rank))), dt)

    def mean_over_last(name, f):  # a reduction must be a compute of its own: sum, then divide
        red = [te.reduce_axis((0, x.shape[a]), name=f"{name}{a}") for a in range(lead, rank)]
        total = te.compute(x.shape[:lead], lambda *i: te.sum(f(i, tuple(red)), axis=red), name=name + "_sum")
        return te.compute(x.shape[:lead], lambda *i: total[i] / count, name=name)

    mean = mean_over_last("ln_mean", lambda i, r: x[i + r])
    var = mean_over_last("ln_var", lambda i, r: (x[i + r] - mean[i]) * (x[i + r] - mean[i]))
    e = tirx.const(eps, dt)

    def f(*i):
        y = (x[i] - mean[i[:lead]]) / te.sqrt(var[i[:lead]] + e)
        if affine:
            y = y * affine[0][i[lead:]]
        return y + affine[1][i[lead:]] if len(affine) == 2 else y

    return te.compute(x.shape, f, name="layer_norm")


def conv_transpose2d_te(x, w, b=None, *, node: ir.ConvTranspose2d):
    (sh, sw), (kh, kw) = node.stride, (int(d) for d in w.shape[2:])
    if (kh, kw) == (sh, sw) and node.padding == (0, 0) and node.output_padding == (0, 0):
        # kernel == stride (a U-Net's 2x2 up): each output pixel takes one tap of one input pixel, a sum
        # over channels only; topi's general form convolves a zero-stuffed input, stride^2 times the work
        c = te.reduce_axis((0, x.shape[1]), name="c")
        shape = (x.shape[0], w.shape[1], x.shape[2] * sh, x.shape[3] * sw)
        y = te.compute(shape, lambda n, o, i, j: te.sum(
            x[n, c, i // sh, j // sw] * w[c, o, i % sh, j % sw], axis=c), name="conv_transpose2d")
    else:
        y = topi.nn.conv2d_transpose_nchw(x, w, list(node.stride), list(node.padding), x.dtype,
                                          list(node.output_padding))
    return _bias_te(y, b)


def _source(i, n_in: int, n_out: int, node: ir.Upsample):
    """(first source index, second, weight of the second) of output index i, as reference.upsample_source."""
    if node.mode == "nearest":
        src = tirx.floordiv(i * n_in, n_out)
        return src, src, None
    f32 = "float32"
    fi = i.astype(f32)
    if node.align_corners:
        pos = fi * tirx.const((n_in - 1) / (n_out - 1), f32) if n_out > 1 else tirx.const(0.0, f32)
    else:
        pos = tirx.max((fi + tirx.const(0.5, f32)) * tirx.const(n_in / n_out, f32) - tirx.const(0.5, f32),
                       tirx.const(0.0, f32))
    i0 = tirx.min(te.floor(pos).astype("int64"), _i64(n_in - 1))
    return i0, tirx.min(i0 + 1, _i64(n_in - 1)), pos - i0.astype(f32)


def upsample_te(x, *, node: ir.Upsample):
    h_in, w_in = int(x.shape[2]), int(x.shape[3])
    oh, ow = node.size

    def f(n, c, i, j):
        h0, h1, fh = _source(i, h_in, oh, node)
        w0, w1, fw = _source(j, w_in, ow, node)
        if fh is None:
            return x[n, c, h0, w0]
        one = tirx.const(1.0, x.dtype)
        top = x[n, c, h0, w0] * (one - fw) + x[n, c, h0, w1] * fw
        bottom = x[n, c, h1, w0] * (one - fw) + x[n, c, h1, w1] * fw
        return top * (one - fh) + bottom * fh

    return te.compute((x.shape[0], x.shape[1], _i64(oh), _i64(ow)), f, name="upsample")


# ---- the graph walk ---------------------------------------------------------------------------------

SUPPORTED = ("conv2d", "linear", "batch_norm", "relu", "clip", "sigmoid", "tanh", "max_pool2d",
             "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "add", "concat", "softmax", "mul",
             "sub", "div", "silu", "hardswish", "hardsigmoid", "gelu", "leaky_relu", "prelu", "transpose", "pad",
             "mean", "sum", "layer_norm", "conv_transpose2d", "upsample", "matmul")


# ops computed the same way on any layout (one input, elementwise, no channel index)
LAYOUT_FREE = (ir.Relu, ir.Clip, ir.Sigmoid, ir.Tanh, ir.Silu, ir.Hardswish, ir.Hardsigmoid, ir.Gelu,
               ir.LeakyRelu)
POOLS = (ir.MaxPool2d, ir.AvgPool2d, ir.AdaptiveAvgPool2d)  # read either layout, write NCHW


def _is_depthwise(node: ir.Node, specs: dict, lanes: int) -> bool:
    if not isinstance(node, ir.Conv2d) or node.inputs[1] not in specs:
        return False
    o, cg, _, _ = specs[node.inputs[1]].shape
    return cg == 1 and node.groups == o and o % lanes == 0


def blocked_values(graph: ir.Graph, specs: dict, packing: set[str], lanes: int | None) -> set[str]:
    """Values kept channel-blocked, [N, C/lanes, H, W, lanes] instead of NCHW.

    Between convolutions that layout makes a depthwise conv one vector of channels per tap and lets
    a channel-vectorized conv store whole vectors. A value is blocked only where its producer and
    every consumer compute on that layout (packed convs, depthwise convs, LAYOUT_FREE ops, add; pools
    read it), so no layout change is ever emitted; graph outputs stay NCHW.
    """
    if lanes is None:
        return set()
    producer = {n.output: n for n in graph.nodes}
    consumers: dict[str, list[ir.Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)

    def candidate(n: ir.Node) -> bool:
        shape = specs[n.output].shape
        if len(shape) != 4 or shape[1] % lanes:
            return False
        if isinstance(n, ir.Add):
            return specs[n.inputs[0]].shape == specs[n.inputs[1]].shape == shape
        return n.name in packing or _is_depthwise(n, specs, lanes) or isinstance(n, LAYOUT_FREE)

    blocked = {n.output for n in graph.nodes if candidate(n)} - set(graph.outputs)

    def reads_blocked(n: ir.Node, value: str) -> bool:  # n, consuming value, works on its blocked form
        if (n.name in packing and value == n.inputs[0]) or isinstance(n, POOLS):
            return True
        return (_is_depthwise(n, specs, lanes) or isinstance(n, (ir.Add, *LAYOUT_FREE))) and n.output in blocked

    def stays(v: str) -> bool:
        n = producer[v]
        if not all(reads_blocked(c, v) for c in consumers.get(v, [])):
            return False
        return n.name in packing or all(i in blocked for i in n.inputs[:1 if not isinstance(n, ir.Add) else 2])

    while True:
        keep = {v for v in blocked if stays(v)}
        if keep == blocked:
            return blocked
        blocked = keep


@dataclass(frozen=True)
class Lowered:
    """The Relax module plus what the build needs to name kernels after nodes."""

    mod: "tvm.IRModule"
    param_names: tuple[str, ...]  # order of the trailing arguments of main
    primfunc_to_node: dict[str, str]  # PrimFunc name -> IR node name
    packed: tuple[str, ...] = ()  # params that transform_params packs, in its output order


def _emit(bb, node: ir.Node, args: list, out: ir.TensorSpec, hint: str, packed_weight: bool = False,
          blocked: set[str] = frozenset(), blocked_depthwise: bool = False):
    # emit_te converts keyword arguments to TVM objects, so Python-side settings go in via partial.
    # The node attribute keeps BlockBuilder from merging structurally equal PrimFuncs of two nodes.
    def e(fn, *a, **kw):
        return bb.emit_te(partial(fn, **kw), *a, primfunc_name_hint=hint,
                          primfunc_attrs={NODE_ATTR: node.name})
    match node:
        case ir.Conv2d() if blocked_depthwise:
            return e(depthwise_blocked_te, *args, node=node)
        case ir.Conv2d() if packed_weight:  # weights packed by transform_params
            return e(conv2d_packed_te, *args, node=node, out=out, blocked_in=node.inputs[0] in blocked,
                     blocked_out=node.output in blocked)
        case ir.Conv2d():
            return e(conv2d_te, *args, node=node)
        case ir.Linear():
            return e(linear_te, *args)
        case ir.BatchNorm():
            return e(batch_norm_te, *args, eps=node.eps)
        case ir.Relu():
            return e(topi.nn.relu, args[0])
        case ir.Clip():
            return e(topi.clip, args[0], node.lo, node.hi)
        case ir.Sigmoid():
            return e(topi.sigmoid, args[0])
        case ir.Tanh():
            return e(topi.tanh, args[0])
        case ir.MaxPool2d():
            return e(max_pool2d_te, args[0], node=node, out=out)
        case ir.AvgPool2d():
            return e(avg_pool2d_te, args[0], node=node, out=out)
        case ir.AdaptiveAvgPool2d():
            return e(adaptive_avg_pool2d_te, args[0], node=node)
        case ir.Flatten() | ir.Reshape():
            return e(reshape_te, args[0], shape=out.shape[1:])
        case ir.Add():
            return e(topi.add, args[0], args[1])
        case ir.Concat():
            return e(lambda *xs: topi.concatenate(xs, node.axis), *args)
        case ir.Softmax():
            return e(softmax_te, args[0], axis=node.axis)
        case ir.Mul():
            return e(topi.multiply, args[0], args[1])
        case ir.Sub():
            return e(topi.subtract, args[0], args[1])
        case ir.Div():
            return e(topi.divide, args[0], args[1])
        case ir.Silu():
            return e(silu_te, args[0])
        case ir.Hardswish():
            return e(hardswish_te, args[0])
        case ir.Hardsigmoid():
            return e(hardsigmoid_te, args[0], alpha=node.alpha, beta=node.beta)
        case ir.Gelu():
            return e(gelu_te, args[0], approximate=node.approximate)
        case ir.LeakyRelu():
            return e(leaky_relu_te, args[0], slope=node.slope)
        case ir.Prelu():
            return e(prelu_te, args[0], args[1])
        case ir.Transpose():
            return e(topi.transpose, args[0], list(node.perm))
        case ir.Pad():
            return e(pad_te, args[0], node=node)
        case ir.Mean() | ir.Sum():
            return e(reduce_te, args[0], axes=node.axes, keepdim=node.keepdim, mean=isinstance(node, ir.Mean))
        case ir.LayerNorm():
            return e(layer_norm_te, *args, axes=node.axes, eps=node.eps)
        case ir.ConvTranspose2d():
            return e(conv_transpose2d_te, *args, node=node)
        case ir.Upsample():
            return e(upsample_te, args[0], node=node)
        case ir.MatMul():
            return e(batch_matmul_te, args[0], args[1])
    raise InternalError(f"tvm lowering has no rule for op {node.op!r} (node {node.name!r})")


def _tensor_type(spec: ir.TensorSpec, batch) -> "relax.TensorType":
    return relax.TensorType([batch if d is None else d for d in spec.shape], spec.dtype)


def lower_graph(graph: ir.Graph, lanes: int | None = None) -> Lowered:
    """Build the Relax IRModule for ``graph`` (validated first; unsupported ops reported together).

    With ``lanes`` set, convolutions that suit it read weights packed for vectors of ``lanes``
    output channels. The packing is a separate function, so it runs once per set of parameters:

    - ``transform_params(<params>) -> (<packed weights>)``
    - ``main_run(<inputs>, <params>, <packed weights>) -> (<outputs>)``
    - ``main(<inputs>, <params>)`` = ``main_run(inputs, params, *transform_params(params))``

    Without packing only ``main`` exists.
    """
    specs = graph.infer_specs()
    bad = sorted({f"{n.op} ({n.name!r})" for n in graph.nodes if n.op not in SUPPORTED})
    if bad:
        raise UnsupportedOpError(f"the TVM backend cannot compile {', '.join(bad)}; supported ops: "
                                 f"{', '.join(SUPPORTED)}. Lower these nodes with a pass first, or "
                                 "use a backend that has them")
    batch = tirx.Var("n", "int64")
    param_names = tuple(sorted(graph.params))
    packing = {n.name for n in graph.nodes if isinstance(n, ir.Conv2d) and n.inputs[1] in graph.params
               and packs_weight(n, specs[n.inputs[1]].shape, lanes)}
    blocked = blocked_values(graph, specs, packing, lanes)
    # a depthwise conv between blocked values reads its weights packed per vector of channels too
    blocked_depthwise = {n.name for n in graph.nodes if n.output in blocked and _is_depthwise(n, specs, lanes)
                         and n.inputs[1] in graph.params}
    packing |= blocked_depthwise
    owner = {n.inputs[1]: n.name for n in graph.nodes if n.name in packing}
    packed = tuple(sorted(owner))

    def var(name: str, ty) -> "relax.Var":
        return relax.Var(sanitize(name), ty)

    inputs = [var(name, _tensor_type(spec, batch)) for name, spec in graph.inputs]
    bb = relax.BlockBuilder()

    if packed:
        params = [var(name, _tensor_type(specs[name], batch)) for name in param_names]
        with bb.function("transform_params", params):
            with bb.dataflow():
                by_name = dict(zip(param_names, params))
                outs = [bb.emit_te(partial(pack_weight_te, lanes=lanes), by_name[p],
                                   primfunc_name_hint=sanitize(owner[p]) + "__pack",
                                   primfunc_attrs={NODE_ATTR: owner[p]}) for p in packed]
                out = bb.emit_output(relax.Tuple(outs))
            bb.emit_func_output(out)
        transform = bb.get().get_global_var("transform_params")
        packed_ty = [relax.TensorType(_pack_shape(specs[p].shape, lanes), specs[p].dtype) for p in packed]

    params = [var(name, _tensor_type(specs[name], batch)) for name in param_names]
    packs = [var(p + "__packed", ty) for p, ty in zip(packed, packed_ty)] if packed else []
    env: dict[str, relax.Expr] = dict(zip([n for n, _ in graph.inputs], inputs))
    env.update(zip(param_names, params))
    packed_env = dict(zip(packed, packs))
    with bb.function("main_run" if packed else "main", inputs + params + packs):
        with bb.dataflow():
            for node in graph.nodes:
                args = [env[i] for i in node.inputs]
                if node.name in packing:  # this conv reads its weight in packed form
                    args[1] = packed_env[node.inputs[1]]
                env[node.output] = _emit(bb, node, args, specs[node.output], sanitize(node.name),
                                         node.name in packing, blocked, node.name in blocked_depthwise)
            out = bb.emit_output(relax.Tuple([env[o] for o in graph.outputs]))
        bb.emit_func_output(out)

    if packed:
        run = bb.get().get_global_var("main_run")
        inputs2 = [var(name, _tensor_type(spec, batch)) for name, spec in graph.inputs]
        params2 = [var(name, _tensor_type(specs[name], batch)) for name in param_names]
        with bb.function("main", inputs2 + params2):
            t = bb.emit(relax.Call(transform, params2))
            ps = [bb.emit(relax.TupleGetItem(t, i)) for i in range(len(packed))]
            out = bb.emit(relax.Call(run, inputs2 + params2 + ps))
            bb.emit_func_output(out)
    mod = bb.get()
    return Lowered(mod, param_names, primfunc_nodes(mod), packed)


def _pack_shape(shape: tuple, lanes: int) -> tuple:
    o, i, kh, kw = shape
    return (o // lanes, i, kh, kw, lanes)


def primfunc_nodes(mod) -> dict[str, str]:
    """PrimFunc name -> the IR node it was emitted for (from the NODE_ATTR attribute)."""
    return {gv.name_hint: str(f.attrs[NODE_ATTR]) for gv, f in mod.functions.items()
            if isinstance(f, tirx.PrimFunc) and f.attrs is not None and NODE_ATTR in f.attrs}
