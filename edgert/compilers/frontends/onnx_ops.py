"""Converters from ONNX ops to edgert IR nodes, and shape arithmetic with a symbolic batch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx
from onnx import helper

from edgert import ir
from edgert.compilers.frontends._common import FLOAT32_MAX, Unsupported, clean

if TYPE_CHECKING:
    from edgert.compilers.frontends.onnx import OnnxImporter


class _Batch:
    """The dynamic batch size inside shape arithmetic."""

    def __repr__(self) -> str:
        return "N"


N = _Batch()


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _mul(dims: tuple) -> Any:
    """Product of dims; None (the batch) survives only when every other factor is 1."""
    k = math.prod(d for d in dims if d is not None)
    if None not in dims:
        return k
    return None if k == 1 else f"{k}*N"


# ---- shape arithmetic: int vectors that may hold the symbolic batch N ----

def _gather(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    return np.take(args[0], np.asarray(args[1]).astype(np.int64), axis=a.get("axis", 0))


def _slice(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    data = args[0]
    if c.opset < 10:
        starts, ends, axes = a["starts"], a["ends"], a.get("axes", [0])
        steps = [1] * len(starts)
    else:
        starts, ends = args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else [0]
        steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    if list(axes) not in ([0], [-1]) or data.ndim != 1:
        raise Unsupported("only 1-D slices of a shape vector are supported")
    return data[int(starts[0]):int(ends[0]):int(steps[0])]


def _concat(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=object).reshape(-1) for x in args])


def _unsqueeze(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    axes = a["axes"] if "axes" in a else list(args[1])
    out = np.asarray(args[0], dtype=object)
    for ax in sorted(int(x) % (out.ndim + len(axes)) for x in axes):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    axes = a.get("axes", list(args[1]) if len(args) > 1 and args[1] is not None else None)
    data = np.asarray(args[0], dtype=object)
    return np.squeeze(data, axis=None if axes is None else tuple(int(x) for x in axes))


def _reshape_vec(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    if args[1] is None:
        raise Unsupported("a shape vector reshaped by a computed shape")
    return np.asarray(args[0], dtype=object).reshape([int(d) for d in args[1]])


def _same(c: OnnxImporter, args: list, a: dict) -> np.ndarray:
    return args[0]


SHAPE_OPS: dict[str, Callable[[OnnxImporter, list, dict], np.ndarray]] = {
    "Gather": _gather, "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Reshape": _reshape_vec, "Cast": _same, "Identity": _same}


# ---- converters: one function per ONNX op ----

def _window_pads(a: dict, in_hw: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``, as ONNX defines them."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise Unsupported(f"pads {p}: only 2-D windows (4 pad values) are supported")
        return tuple(p)
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={auto!r}; supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _need_4d(c: OnnxImporter, node: onnx.NodeProto) -> tuple:
    shape = c.shape(node.input[0])
    if len(shape) != 4:
        raise Unsupported(f"only 2-D (NCHW) inputs are supported, got shape {shape}")
    return shape


def _conv1d(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """Conv on [N, C, L] as conv2d on [N, C, 1, L] between two reshapes (views on every backend)."""
    a = node_attrs(node)
    _, ch, length = c.shape(node.input[0])
    w = c.const(node.input[1], "weight")
    stride, dilation = tuple(a.get("strides", (1,))), tuple(a.get("dilations", (1,)))
    begin, end = list(a.get("pads", [0, 0]))
    as_2d = {**a, "pads": [0, begin, 0, end]}  # (top, left, bottom, right)
    _, left, _, right = _window_pads(as_2d, (1, length), (1,) + w.shape[2:], (1,) + stride, (1,) + dilation)
    x2 = c.emit(ir.Reshape, node, (c.act(node.input[0]),), suffix="_2d", shape=(ch, 1, length))
    inputs = (x2, c.param(node.input[1] + ":2d", clean(node.input[1]), w[:, :, None, :]))
    if len(node.input) > 2 and node.input[2]:
        inputs += (c.value(node.input[2]),)
    y2 = c.emit(ir.Conv2d, node, inputs, suffix="_conv", stride=(1,) + stride, padding=(0, left, 0, right),
                dilation=(1,) + dilation, groups=a.get("group", 1))
    c.emit(ir.Reshape, node, (y2,), shape=c.specs[y2].shape[1:2] + c.specs[y2].shape[3:])


def _conv(c: OnnxImporter, node: onnx.NodeProto) -> None:
    if len(c.shape(node.input[0])) == 3:
        _conv1d(c, node)
        return
    a = node_attrs(node)
    shape = _need_4d(c, node)
    w = c.const(node.input[1], "weight")
    stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
    pads = _window_pads(a, shape[2:], w.shape[2:], stride, dilation)
    inputs = (c.act(node.input[0]), c.value(node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        inputs += (c.value(node.input[2]),)
    c.emit(ir.Conv2d, node, inputs, stride=stride, padding=pads, dilation=dilation, groups=a.get("group", 1))


def _conv_transpose(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    _need_4d(c, node)
    c.const(node.input[1], "weight")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if (a.get("group", 1) != 1 or tuple(a.get("dilations", (1, 1))) != (1, 1) or "output_shape" in a
            or a.get("auto_pad", "NOTSET") not in ("NOTSET", "") or pads[:2] != pads[2:]):
        raise Unsupported("ConvTranspose with groups, dilations, output_shape, auto_pad or asymmetric pads; "
                          "edgert supports group 1, dilation 1 and symmetric pads (PyTorch's ConvTranspose2d)")
    inputs = (c.act(node.input[0]), c.value(node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        inputs += (c.value(node.input[2]),)
    c.emit(ir.ConvTranspose2d, node, inputs, stride=tuple(a.get("strides", (1, 1))), padding=tuple(pads[:2]),
           output_padding=tuple(a.get("output_padding", (0, 0))))


def _resize(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """Resize: nearest with asymmetric coordinates and floor rounding; linear with half_pixel,
    pytorch_half_pixel or align_corners (what torch's nn.Upsample and F.interpolate export)."""
    a = node_attrs(node)
    shape = _need_4d(c, node)
    mode, coords = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    if len(node.input) > 3 and node.input[3]:
        sizes = c.shapes[node.input[3]] if node.input[3] in c.shapes else c.const(node.input[3], "sizes")
        size = [None if d is N else int(d) for d in list(sizes)]  # from the input's Shape: N is the batch
    else:
        scales = c.const(node.input[2], "scales").tolist()
        size = [None] + [int(np.floor(d * s)) for d, s in zip(shape[1:], scales[1:])]  # dim 0: the batch
    if len(size) != 4 or size[1] != shape[1] or any(a.get(k, 0) for k in ("antialias", "exclude_outside")):
        raise Unsupported(f"Resize to {size} from {shape}: edgert resizes H and W only, without antialias")
    if mode == "nearest" and coords == "asymmetric" and a.get("nearest_mode", "round_prefer_floor") == "floor":
        c.emit(ir.Upsample, node, (c.act(node.input[0]),), size=tuple(size[2:]), mode="nearest")
    elif mode == "linear" and coords in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if coords == "pytorch_half_pixel" and min(size[2:]) < 2:
            raise Unsupported("Resize pytorch_half_pixel to a size of 1")
        c.emit(ir.Upsample, node, (c.act(node.input[0]),), size=tuple(size[2:]), mode="bilinear",
               align_corners=coords == "align_corners")
    else:
        raise Unsupported(f"Resize mode={mode!r}, coordinate_transformation_mode={coords!r}, nearest_mode="
                          f"{a.get('nearest_mode', 'round_prefer_floor')!r}; supported: nearest with asymmetric "
                          "and floor, linear with half_pixel, pytorch_half_pixel or align_corners")


def _gemm(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    if a.get("transA", 0):
        raise Unsupported("transA=1 is not supported")
    if len(c.shape(node.input[0])) != 2:
        raise Unsupported(f"Gemm needs a 2-D input, got shape {c.shape(node.input[0])}")
    b = c.const(node.input[1], "B matrix")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    w = (b if a.get("transB", 0) else b.T) * np.float32(alpha)
    key = f"{node.input[1]}:{a.get('transB', 0)}:{alpha}"
    label = clean(node.input[1]) + ("" if a.get("transB", 0) else ".T") + ("" if alpha == 1 else ".scaled")
    inputs = (c.act(node.input[0]), c.param(key, label, np.ascontiguousarray(w)))
    if len(node.input) > 2 and node.input[2]:
        bias = c.const(node.input[2], "C bias") * np.float32(beta)
        out_features = w.shape[0]
        if bias.size == 1:
            bias = np.full(out_features, bias.reshape(()), np.float32)
        elif bias.shape not in ((out_features,), (1, out_features)):
            raise Unsupported(f"C has shape {bias.shape}; a bias of ({out_features},) or (1, {out_features}) "
                              "is supported")
        inputs += (c.param(f"{node.input[2]}:{beta}", clean(node.input[2]), bias.reshape(-1)),)
    c.emit(ir.Linear, node, inputs)


def _matmul(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """A constant second operand makes a Linear (with a following bias Add fused); two activations
    (attention) a MatMul."""
    if node.input[1] not in c.consts:
        c.emit(ir.MatMul, node, (c.value(node.input[0]), c.value(node.input[1])))
        return
    b = c.const(node.input[1], "second operand")
    if b.ndim != 2:
        raise Unsupported(f"the constant operand has shape {b.shape}; only 2-D weights are supported")
    inputs = (c.act(node.input[0]), c.param(node.input[1] + ":T", clean(node.input[1]) + ".T",
                                            np.ascontiguousarray(b.T)))
    users = c.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and all(o.name != node.output[0] for o in c.graph.output):
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        bias = c.consts.get(other)
        if bias is not None and bias.shape in ((b.shape[1],), (1, b.shape[1])):
            inputs += (c.param(other, clean(other), bias.reshape(-1)),)
            c.fused.add(id(add))
            c.emit(ir.Linear, node, inputs, onnx_out=add.output[0])
            return
    c.emit(ir.Linear, node, inputs)


def _batch_norm(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    if a.get("training_mode", 0) or a.get("spatial", 1) == 0 or any(c.used(o) for o in node.output[1:]):
        raise Unsupported("only inference-mode batch normalization (one output, spatial) is supported")
    for i, what in zip(node.input[1:], ("scale", "bias", "mean", "var")):
        c.const(i, what)
    c.emit(ir.BatchNorm, node, (c.act(node.input[0]),) + tuple(c.value(i) for i in node.input[1:5]),
           eps=float(a.get("epsilon", 1e-5)))


def _unary(cls: type[ir.Node]) -> Callable[[OnnxImporter, onnx.NodeProto], None]:
    def convert(c: OnnxImporter, node: onnx.NodeProto) -> None:
        c.emit(cls, node, (c.act(node.input[0]),))
    return convert


def _scalar(c: OnnxImporter, node: onnx.NodeProto, i: int, default: float) -> float:
    if len(node.input) <= i or not node.input[i]:
        return default
    v = c.const(node.input[i], "bound")
    if v.size != 1:
        raise Unsupported(f"bound '{node.input[i]}' has shape {v.shape}; a scalar is needed")
    return float(v.reshape(()))


def _clip(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    if c.opset < 11:
        lo, hi = float(a.get("min", -FLOAT32_MAX)), float(a.get("max", FLOAT32_MAX))
    else:
        lo, hi = _scalar(c, node, 1, -FLOAT32_MAX), _scalar(c, node, 2, FLOAT32_MAX)
    c.emit(ir.Clip, node, (c.act(node.input[0]),), lo=max(lo, -FLOAT32_MAX), hi=min(hi, FLOAT32_MAX))


def _min_max(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """Max(x, k) and Min(x, k) with a scalar constant k are one-sided clips."""
    if len(node.input) != 2:
        raise Unsupported("only Min/Max of a tensor and one scalar constant is supported")
    x, k = (node.input[0], node.input[1]) if node.input[0] in c.acts else (node.input[1], node.input[0])
    v = c.const(k, "operand")
    if v.size != 1:
        raise Unsupported(f"operand '{k}' has shape {v.shape}; only a scalar constant is supported")
    bound = float(v.reshape(()))
    lo, hi = (bound, FLOAT32_MAX) if node.op_type == "Max" else (-FLOAT32_MAX, bound)
    c.emit(ir.Clip, node, (c.act(x),), lo=lo, hi=hi)


def _pool(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    shape = _need_4d(c, node)
    kernel = tuple(a["kernel_shape"])
    stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
    pads = _window_pads(a, shape[2:], kernel, stride, dilation)
    x = (c.act(node.input[0]),)
    if node.op_type == "MaxPool":
        if any(c.used(o) for o in node.output[1:]):
            raise Unsupported("the Indices output is not supported")
        c.emit(ir.MaxPool2d, node, x, kernel=kernel, stride=stride, padding=pads, dilation=dilation,
               ceil_mode=bool(a.get("ceil_mode", 0)))
        return
    if dilation != (1, 1):
        raise Unsupported(f"dilations {dilation} in average pooling are not supported")
    c.emit(ir.AvgPool2d, node, x, kernel=kernel, stride=stride, padding=pads,
           ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))


def _global_pool(c: OnnxImporter, node: onnx.NodeProto) -> None:
    shape = _need_4d(c, node)
    if node.op_type == "GlobalAveragePool":
        c.emit(ir.AdaptiveAvgPool2d, node, (c.act(node.input[0]),), output_size=(1, 1))
    else:
        c.emit(ir.MaxPool2d, node, (c.act(node.input[0]),), kernel=shape[2:], stride=(1, 1))


def _reduce(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """ReduceMean and ReduceSum; the mean over H and W of NCHW is global average pooling."""
    a = node_attrs(node)
    shape = c.shape(node.input[0])
    if "axes" in a:
        axes = a["axes"]
    elif len(node.input) > 1 and node.input[1]:
        axes = c.const(node.input[1], "axes").tolist()
    else:
        axes = []
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            c.alias(node)
            return
        axes = list(range(len(shape)))
    axes = tuple(sorted(int(x) % len(shape) for x in axes))
    if 0 in axes:
        raise Unsupported(f"{node.op_type} over axes {axes} of shape {shape} takes in the batch axis 0; "
                          "reduce over feature axes (>= 1)")
    x = (c.act(node.input[0]),)
    if node.op_type == "ReduceSum" or len(shape) != 4 or axes != (2, 3):
        c.emit(ir.Sum if node.op_type == "ReduceSum" else ir.Mean, node, x, axes=axes,
               keepdim=bool(a.get("keepdims", 1)))
        return
    if a.get("keepdims", 1):
        c.emit(ir.AdaptiveAvgPool2d, node, x, output_size=(1, 1))
    else:
        pooled = c.emit(ir.AdaptiveAvgPool2d, node, x, suffix="_pool", output_size=(1, 1))
        c.emit(ir.Flatten, node, (pooled,), start_dim=1)


def _flatten(c: OnnxImporter, node: onnx.NodeProto) -> None:
    shape = c.shape(node.input[0])
    axis = node_attrs(node).get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    c.reshape_to(node, (_mul(shape[:axis]), _mul(shape[axis:])))


def _reshape(c: OnnxImporter, node: onnx.NodeProto) -> None:
    shape = c.shape(node.input[0])
    if node.input[1] in c.shapes:
        target = list(c.shapes[node.input[1]])
    else:
        target = c.const(node.input[1], "shape").tolist()
    allowzero = node_attrs(node).get("allowzero", 0)
    dims: list[Any] = []
    for i, d in enumerate(target):
        if d is N:
            dims.append(None)
        elif int(d) == 0 and not allowzero:
            if i >= len(shape):
                raise Unsupported(f"shape {target} copies dimension {i} of a rank-{len(shape)} input")
            dims.append(shape[i])
        else:
            dims.append(int(d))
    if dims.count(-1) > 1:
        raise Unsupported(f"shape {target} has more than one -1")
    if -1 in dims:
        i = dims.index(-1)
        known = math.prod(d for j, d in enumerate(dims) if j != i and d is not None)
        per_sample = math.prod(shape[1:])
        if i == 0 and shape[0] is None:
            dims[0] = None if known == per_sample else f"{per_sample}*N/{known}"
        elif shape[0] is None and dims[0] is None:
            dims[i] = per_sample // known
        elif shape[0] is None:
            dims[i] = f"{per_sample}*N/{known}"
        else:
            dims[i] = shape[0] * per_sample // known
    c.reshape_to(node, tuple(dims))


def _squeeze_unsqueeze(c: OnnxImporter, node: onnx.NodeProto) -> None:
    shape = list(c.shape(node.input[0]))
    a = node_attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = c.const(node.input[1], "axes").tolist()
    if node.op_type == "Unsqueeze":
        rank = len(shape) + len(axes)
        for ax in sorted(int(x) % rank for x in axes):
            shape.insert(ax, 1)
    else:
        drop = {int(x) % len(shape) for x in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
        shape = [d for i, d in enumerate(shape) if i not in drop]
    c.reshape_to(node, tuple(shape))


def _add(c: OnnxImporter, node: onnx.NodeProto) -> None:
    c.emit(ir.Add, node, (c.value(node.input[0]), c.value(node.input[1])))


def _binary(cls: type[ir.Node]) -> Callable[[OnnxImporter, onnx.NodeProto], None]:
    def convert(c: OnnxImporter, node: onnx.NodeProto) -> None:
        c.emit(cls, node, (c.value(node.input[0]), c.value(node.input[1])))
    return convert


def _hard_sigmoid(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    c.emit(ir.Hardsigmoid, node, (c.act(node.input[0]),), alpha=float(a.get("alpha", 0.2)),
           beta=float(a.get("beta", 0.5)))


def _gelu(c: OnnxImporter, node: onnx.NodeProto) -> None:
    c.emit(ir.Gelu, node, (c.act(node.input[0]),), approximate=node_attrs(node).get("approximate", "none"))


def _leaky_relu(c: OnnxImporter, node: onnx.NodeProto) -> None:
    c.emit(ir.LeakyRelu, node, (c.act(node.input[0]),), slope=float(node_attrs(node).get("alpha", 0.01)))


def _prelu(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """PRelu's slope broadcasts from the right; edgert's is one value or one per channel (axis 1)."""
    shape = c.shape(node.input[0])
    slope = c.const(node.input[1], "slope")
    full = (1,) * (len(shape) - slope.ndim) + slope.shape  # right-aligned against the input
    per_channel = len(shape) >= 2 and full[1] == shape[1] and slope.size == shape[1]
    if slope.size != 1 and not per_channel:
        raise Unsupported(f"PRelu slope of shape {slope.shape} on input {shape}; a scalar or one slope per "
                          "channel (axis 1) is supported")
    c.emit(ir.Prelu, node, (c.act(node.input[0]), c.param(node.input[1] + ":vec", clean(node.input[1]),
                                                         slope.reshape(-1).astype(np.float32))))


def _transpose(c: OnnxImporter, node: onnx.NodeProto) -> None:
    rank = len(c.shape(node.input[0]))
    perm = tuple(int(p) for p in node_attrs(node).get("perm", range(rank - 1, -1, -1)))
    if perm[0] != 0:
        raise Unsupported(f"Transpose perm {perm} moves the batch axis 0; edgert graphs keep it first")
    if perm == tuple(range(rank)):
        c.alias(node)
    else:
        c.emit(ir.Transpose, node, (c.act(node.input[0]),), perm=perm)


def _pad(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    if a.get("mode", "constant") != "constant":
        raise Unsupported(f"Pad mode {a['mode']!r}; edgert pads with a constant (mode 'constant')")
    rank = len(c.shape(node.input[0]))
    pads = [int(p) for p in (a["pads"] if c.opset < 11 else c.const(node.input[1], "pads").tolist())]
    value = float(a.get("value", 0.0)) if c.opset < 11 else _scalar(c, node, 2, 0.0)
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(x) % rank for x in c.const(node.input[3], "axes").tolist()]
    before, after = [0] * rank, [0] * rank
    for k, ax in enumerate(axes):
        before[ax], after[ax] = pads[k], pads[k + len(axes)]
    if min(before + after) < 0 or before[0] or after[0]:
        raise Unsupported(f"pads {pads}: edgert pads feature axes by non-negative amounts (negative pads crop)")
    c.emit(ir.Pad, node, (c.act(node.input[0]),), before=tuple(before), after=tuple(after), value=value)


def _layer_norm(c: OnnxImporter, node: onnx.NodeProto) -> None:
    a = node_attrs(node)
    rank = len(c.shape(node.input[0]))
    if any(c.used(o) for o in node.output[1:]):
        raise Unsupported("the Mean and InvStdDev outputs of LayerNormalization are not supported")
    axis = int(a.get("axis", -1)) % rank
    ins = (c.act(node.input[0]),) + tuple(c.value(i) for i in node.input[1:3] if i)
    c.emit(ir.LayerNorm, node, ins, axes=rank - axis, eps=float(a.get("epsilon", 1e-5)))


def _concat(c: OnnxImporter, node: onnx.NodeProto) -> None:
    rank = len(c.shape(next(i for i in node.input if i in c.acts)))
    axis = node_attrs(node)["axis"] % rank
    if axis == 0:
        raise Unsupported("concatenation along the batch axis 0; join along a feature axis (>= 1)")
    c.emit(ir.Concat, node, tuple(c.value(i) for i in node.input if i), axis=axis)


def _softmax(c: OnnxImporter, node: onnx.NodeProto) -> None:
    shape = c.shape(node.input[0])
    axis = node_attrs(node).get("axis", 1 if c.opset < 13 else -1) % len(shape)
    if axis == 0:
        raise Unsupported("softmax over the batch axis 0; use a feature axis (>= 1)")
    if c.opset < 13 and any(d != 1 for d in shape[axis + 1:]):
        raise Unsupported(f"opset {c.opset} Softmax normalizes over all axes from {axis} on, shape {shape}; "
                          "export with opset >= 13")
    c.emit(ir.Softmax, node, (c.act(node.input[0]),), axis=axis)


def _dropout(c: OnnxImporter, node: onnx.NodeProto) -> None:
    if len(node.input) > 2 and node.input[2] and bool(c.const(node.input[2], "training_mode")):
        raise Unsupported("dropout in training mode; export the model in eval mode")
    if any(c.used(o) for o in node.output[1:]):
        raise Unsupported("the dropout mask output is not supported")
    c.alias(node)


def _cast(c: OnnxImporter, node: onnx.NodeProto) -> None:
    if node_attrs(node).get("to") != onnx.TensorProto.FLOAT:
        raise Unsupported("casts away from float32 are not supported; edgert graphs compute in float32")
    c.alias(node)


def _cast_like(c: OnnxImporter, node: onnx.NodeProto) -> None:
    """CastLike(v, x) with x computed from the input: x is float32, so v becomes (or stays) float32."""
    if node.input[0] in c.consts:
        c.consts[node.output[0]] = c.consts[node.input[0]].astype(np.float32)
    else:
        c.alias(node)


CONVERTERS: dict[str, Callable[[OnnxImporter, onnx.NodeProto], None]] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Resize": _resize, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Relu": _unary(ir.Relu), "Sigmoid": _unary(ir.Sigmoid), "Tanh": _unary(ir.Tanh), "Clip": _clip,
    "Max": _min_max, "Min": _min_max, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "ReduceMean": _reduce, "ReduceSum": _reduce,
    "Transpose": _transpose, "Pad": _pad, "LayerNormalization": _layer_norm,
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze_unsqueeze, "Unsqueeze": _squeeze_unsqueeze,
    "Add": _add, "Mul": _binary(ir.Mul), "Sub": _binary(ir.Sub), "Div": _binary(ir.Div),
    "HardSigmoid": _hard_sigmoid, "HardSwish": _unary(ir.Hardswish), "Gelu": _gelu, "LeakyRelu": _leaky_relu,
    "PRelu": _prelu, "Concat": _concat, "Softmax": _softmax, "Identity": lambda c, n: c.alias(n),
    "Dropout": _dropout, "Cast": _cast, "CastLike": _cast_like,
}

from edgert.compilers.frontends.onnx_binary import BINARY_CONVERTERS  # noqa: E402  (Sign -> binary layers)

CONVERTERS.update(BINARY_CONVERTERS)
