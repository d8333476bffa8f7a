"""Converters from aten ops to edgert IR nodes, one function per op family, for the torch frontend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import fx

from edgert import ir
from edgert.compilers.frontends._common import FLOAT32_MAX, Unsupported, reshape_node

if TYPE_CHECKING:
    from edgert.compilers.frontends.torch import TorchImporter

aten = torch.ops.aten


def target_name(target: Any) -> str:
    """'aten.conv2d.default' for an aten overload, else the callable's name."""
    return str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))


def _args(n: fx.Node) -> dict[str, Any]:
    """Arguments of an aten call by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, a in enumerate(n.target._schema.arguments):  # type: ignore[union-attr]
        if i < len(n.args):
            out[a.name] = n.args[i]
        elif a.name in n.kwargs:
            out[a.name] = n.kwargs[a.name]
        else:
            out[a.name] = a.default_value if a.has_default_value() else None
    return out


def _two(v: Any) -> tuple[int, int]:
    """An int, a 1-list or a pair as an (h, w) pair."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(d) for d in v)
    return (v[0], v[0]) if len(v) == 1 else v  # type: ignore[return-value]


# ---- converters: one function per aten op family ----

def _conv(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("transposed"):
        _conv_transpose(c, n, a)
        return
    if len(c.shape(a["input"])) == 3:
        _conv1d(c, n, a)
        return
    if len(c.shape(a["input"])) != 4:
        raise Unsupported(f"only 2-D convolution on NCHW input is supported, got input {c.shape(a['input'])}")
    w = c.const(a["weight"], "convolution weight")
    dilation = _two(a["dilation"])
    padding = a["padding"]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, w.shape[2:])]
        padding = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    inputs = (c.value(a["input"]), c.value(a["weight"])) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    c.emit(ir.Conv2d, n, inputs, stride=_two(a["stride"]),
           padding=padding if len(padding) == 4 else _two(padding), dilation=dilation, groups=int(a["groups"]))


def _one(v: Any) -> int:
    return int(v) if isinstance(v, int) else int(v[0])


def _conv1d(c: TorchImporter, n: fx.Node, a: dict) -> None:
    """conv1d on [N, C, L] as conv2d on [N, C, 1, L]: a reshape, the conv with a [O, C/g, 1, k] weight,
    and a reshape back (the reshapes are views on every backend)."""
    (_, ch, length), w = c.shape(a["input"]), c.const(a["weight"], "convolution weight")
    k, dilation = w.shape[2], _one(a["dilation"])
    padding = a["padding"]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = dilation * (k - 1)
        padding = (total // 2, total - total // 2)
    else:
        padding = (_one(padding),) * 2
    if a.get("output_padding") and any(a["output_padding"]):
        raise Unsupported(f"output_padding {a['output_padding']} on a conv1d")
    x2 = c.emit(ir.Reshape, n, (c.value(a["input"]),), out=c.out(n, "_2d"), suffix="_2d", shape=(ch, 1, length))
    w2 = c.param(a["weight"].name + ".2d", c.labels[a["weight"].name], w.unsqueeze(2))
    inputs = (x2, w2) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    y2 = c.emit(ir.Conv2d, n, inputs, out=c.out(n, "_conv"), suffix="_conv", stride=(1, _one(a["stride"])),
                padding=(0, padding[0], 0, padding[1]), dilation=(1, dilation), groups=int(a["groups"]))
    c.emit(ir.Reshape, n, (y2,), shape=c.shape(n)[1:])


def _conv_transpose(c: TorchImporter, n: fx.Node, a: dict) -> None:
    if len(c.shape(a["input"])) != 4:
        raise Unsupported(f"only 2-D transposed convolution on NCHW input is supported, got {c.shape(a['input'])}")
    c.const(a["weight"], "convolution weight")
    if int(a["groups"]) != 1 or _two(a["dilation"]) != (1, 1):
        raise Unsupported(f"transposed convolution with groups={a['groups']}, dilation={a['dilation']}; edgert "
                          "supports groups=1 and dilation=1")
    inputs = (c.value(a["input"]), c.value(a["weight"])) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    c.emit(ir.ConvTranspose2d, n, inputs, stride=_two(a["stride"]), padding=_two(a["padding"]),
           output_padding=_two(a["output_padding"]))


def _conv_transpose2d(c: TorchImporter, n: fx.Node) -> None:
    _conv_transpose(c, n, _args(n))


def _upsample(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    x = a.get("input", a.get("self"))
    in_hw, out_hw = c.shape(x)[2:], c.shape(n)[2:]
    scales = a.get("scale_factors") or [a.get("scales_h"), a.get("scales_w")]
    for d_in, d_out, s in zip(in_hw, out_hw, scales):
        if s is not None and d_in * s != d_out:
            raise Unsupported(f"scale factor {s} from {d_in} gives {d_in * s}, not a whole size; give "
                              "size=... or a scale factor that makes a whole size")
    bilinear = "bilinear" in target_name(n.target)
    c.emit(ir.Upsample, n, (c.value(x),), size=out_hw, mode="bilinear" if bilinear else "nearest",
           align_corners=bool(a.get("align_corners")) if bilinear else False)


def _linear(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    c.const(a["weight"], "linear weight")
    inputs = (c.value(a["input"]), c.value(a["weight"])) + ((c.value(a["bias"]),) if a["bias"] is not None else ())
    c.emit(ir.Linear, n, inputs)


def _transposed(c: TorchImporter, a: fx.Node) -> str:
    """A constant [K, O] matrix as the parameter [O, K] that Linear wants (the source's name if it was W.T)."""
    w = c.const(a, "second matrix operand")
    if w.dim() != 2:
        raise Unsupported(f"the constant operand has shape {tuple(w.shape)}; only 2-D weights are supported")
    base, _, last = c.labels[a.name].rpartition(".")
    label = base if base and last in ("permute", "t", "transpose") else f"{c.labels[a.name]}.T"
    return c.param(a.name + ".T", label, w.T.contiguous())


def _addmm(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a["beta"] != 1 or a["alpha"] != 1:
        raise Unsupported(f"addmm with beta={a['beta']}, alpha={a['alpha']}; only 1 is supported")
    w = _transposed(c, a["mat2"])
    bias = c.const(a["self"], "addmm bias")
    if bias.numel() != c.params[w].shape[0]:
        raise Unsupported(f"the bias has shape {tuple(bias.shape)}; a vector of {c.params[w].shape[0]} is needed")
    b = c.param(a["self"].name + ".vec", c.labels[a["self"].name], bias.reshape(-1))
    c.emit(ir.Linear, n, (c.value(a["mat1"]), w, b))


def _matmul(c: TorchImporter, n: fx.Node) -> None:
    """A constant second operand makes a Linear; two activations (attention) a MatMul."""
    x, other = n.args[0], n.args[1]
    if isinstance(other, fx.Node) and not isinstance(c.consts.get(other.name), torch.Tensor):
        c.emit(ir.MatMul, n, (c.value(x), c.value(other)))
        return
    c.emit(ir.Linear, n, (c.value(x), _transposed(c, other)))


def _batch_norm(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("training"):
        raise Unsupported("batch norm in training mode; call model.eval() before exporting")
    if a["running_mean"] is None or a["running_var"] is None:
        raise Unsupported("batch norm without running statistics (track_running_stats=False) normalizes "
                          "with batch statistics; train with track_running_stats=True")
    channels = c.shape(a["input"])[1]
    module = c.labels.get(a["running_mean"].name, n.name).rsplit(".", 1)[0]  # "bn" from "bn.running_mean"
    gamma = c.value(a["weight"]) if a["weight"] is not None else c.param(
        n.name + ".weight", f"{module}.weight", np.ones(channels, np.float32))
    beta = c.value(a["bias"]) if a["bias"] is not None else c.param(
        n.name + ".bias", f"{module}.bias", np.zeros(channels, np.float32))
    inputs = (c.value(a["input"]), gamma, beta, c.value(a["running_mean"]), c.value(a["running_var"]))
    if n.target == aten._native_batch_norm_legit_no_training.default:
        out = c.emit(ir.BatchNorm, n, inputs, out=c.values(n.name), eps=float(a["eps"]))
        c.tuples[n.name] = (out, None, None)
    else:
        c.emit(ir.BatchNorm, n, inputs, eps=float(a["eps"]))


def _unary(cls: type[ir.Node], **attrs: Any) -> Callable[[TorchImporter, fx.Node], None]:
    def convert(c: TorchImporter, n: fx.Node) -> None:
        c.emit(cls, n, (c.value(n.args[0]),), **attrs)
    return convert


def _hardtanh(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    c.emit(ir.Clip, n, (c.value(a["self"]),), lo=float(a["min_val"]), hi=float(a["max_val"]))


def _clamp(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    lo, hi = a.get("min"), a.get("max")
    c.emit(ir.Clip, n, (c.value(a["self"]),), lo=-FLOAT32_MAX if lo is None else float(lo),
           hi=FLOAT32_MAX if hi is None else float(hi))


def _max_pool(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    kernel = _two(a["kernel_size"])
    attrs = dict(kernel=kernel, stride=_two(a["stride"]) if a["stride"] else kernel, padding=_two(a["padding"]),
                 dilation=_two(a["dilation"]), ceil_mode=bool(a["ceil_mode"]))
    if n.target == aten.max_pool2d_with_indices.default:  # (values, indices): only values are supported
        c.tuples[n.name] = (c.emit(ir.MaxPool2d, n, (c.value(a["self"]),), out=c.values(n.name), **attrs), None)
    else:
        c.emit(ir.MaxPool2d, n, (c.value(a["self"]),), **attrs)


def _avg_pool(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a["divisor_override"] is not None:
        raise Unsupported(f"divisor_override={a['divisor_override']} is not supported")
    kernel = _two(a["kernel_size"])
    c.emit(ir.AvgPool2d, n, (c.value(a["self"]),), kernel=kernel,
           stride=_two(a["stride"]) if a["stride"] else kernel, padding=_two(a["padding"]),
           ceil_mode=bool(a["ceil_mode"]), count_include_pad=bool(a["count_include_pad"]))


def _adaptive_avg_pool(c: TorchImporter, n: fx.Node) -> None:
    out_hw = c.shape(n)[2:]
    c.emit(ir.AdaptiveAvgPool2d, n, (c.value(n.args[0]),), output_size=out_hw)


def _reduce_axes(c: TorchImporter, a: dict) -> tuple[int, ...]:
    shape = c.shape(a["self"])
    axes = tuple(sorted(d % len(shape) for d in (a["dim"] or range(len(shape)))))
    if 0 in axes:
        raise Unsupported(f"a reduction over dims {a['dim']} of shape {shape} takes in the batch axis 0; "
                          "reduce over feature axes (dim >= 1)")
    if a.get("dtype") not in (None, torch.float32):
        raise Unsupported(f"a reduction to {a['dtype']}; edgert graphs compute in float32")
    return axes


def _sum(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    c.emit(ir.Sum, n, (c.value(a["self"]),), axes=_reduce_axes(c, a), keepdim=bool(a["keepdim"]))


def _mean(c: TorchImporter, n: fx.Node) -> None:
    """The mean over H and W of NCHW is global average pooling (what the C backend and adaptation know
    best); any other mean is a Mean node."""
    a = _args(n)
    shape = c.shape(a["self"])
    axes = _reduce_axes(c, a)
    if len(shape) != 4 or axes != (2, 3):
        c.emit(ir.Mean, n, (c.value(a["self"]),), axes=axes, keepdim=bool(a["keepdim"]))
        return
    if a["keepdim"]:
        c.emit(ir.AdaptiveAvgPool2d, n, (c.value(a["self"]),), output_size=(1, 1))
        return
    pooled = c.emit(ir.AdaptiveAvgPool2d, n, (c.value(a["self"]),), out=c.out(n, "_pool"), suffix="_pool",
                    output_size=(1, 1))
    c.emit(ir.Flatten, n, (pooled,), start_dim=1)


def _reshape(c: TorchImporter, n: fx.Node) -> None:
    x = n.args[0]
    node = reshape_node("", c.value(x), "", c.shape(x), c.shape(n))
    if node is None:
        c.alias(n, x)
    else:
        c.emit(type(node), n, node.inputs, **node.attrs())


def _add(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a["alpha"] != 1:
        raise Unsupported(f"add with alpha={a['alpha']}; edgert supports alpha=1 (a plain a + b)")
    other = a["other"]
    if isinstance(other, (int, float)):
        b = c.param(n.name + ".other", f"{n.name}.other", np.array([other], np.float32))
    else:
        b = c.value(other)
    c.emit(ir.Add, n, (c.value(a["self"]), b))


def _operand(c: TorchImporter, n: fx.Node, v: Any, which: str) -> str:
    """An elementwise operand: an activation, a constant tensor, or a Python number (a [1] parameter)."""
    if isinstance(v, (int, float)):
        return c.param(f"{n.name}.{which}", f"{n.name}.{which}", np.array([v], np.float32))
    return c.value(v)


def _binary(cls: type[ir.Node]) -> Callable[[TorchImporter, fx.Node], None]:
    """mul, sub, div (and rsub, operands swapped): tensors or numbers, NumPy broadcasting."""
    def convert(c: TorchImporter, n: fx.Node) -> None:
        a = _args(n)
        if a.get("alpha", 1) != 1:
            raise Unsupported(f"{target_name(n.target)} with alpha={a['alpha']}; edgert supports alpha=1")
        if a.get("rounding_mode") is not None:
            raise Unsupported(f"division with rounding_mode={a['rounding_mode']!r}; edgert divides exactly "
                              "(rounding_mode=None)")
        ins = (_operand(c, n, a["self"], "self"), _operand(c, n, a["other"], "other"))
        c.emit(cls, n, ins[::-1] if "rsub" in target_name(n.target) else ins)
    return convert


def _gelu(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    c.emit(ir.Gelu, n, (c.value(a["self"]),), approximate=a["approximate"] or "none")


def _leaky_relu(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    c.emit(ir.LeakyRelu, n, (c.value(a["self"]),), slope=float(a["negative_slope"]))


def _prelu(c: TorchImporter, n: fx.Node) -> None:
    x, w = n.args[0], n.args[1]
    slope = c.const(w, "PReLU slope")
    c.emit(ir.Prelu, n, (c.value(x), c.param(w.name + ".vec", c.labels[w.name], slope.reshape(-1))))


def _permute(c: TorchImporter, n: fx.Node) -> None:
    rank = len(c.shape(n.args[0]))
    if n.target == aten.permute.default:
        perm = [d % rank for d in n.args[1]]
    else:  # transpose.int: swap two axes
        perm = list(range(rank))
        i, j = n.args[1] % rank, n.args[2] % rank
        perm[i], perm[j] = perm[j], perm[i]
    if perm[0] != 0:
        raise Unsupported(f"a permutation {perm} that moves the batch axis 0; edgert graphs keep it first")
    if perm == sorted(perm):
        c.alias(n, n.args[0])
    else:
        c.emit(ir.Transpose, n, (c.value(n.args[0]),), perm=tuple(perm))


def _pad(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("mode", "constant") != "constant":
        raise Unsupported(f"padding mode {a['mode']!r}; edgert pads with a constant (mode='constant')")
    rank, pad = len(c.shape(a["self"])), list(a["pad"])
    if len(pad) % 2 or len(pad) // 2 >= rank or min(pad, default=0) < 0:
        raise Unsupported(f"pad {pad} on a rank-{rank} input; give non-negative (before, after) pairs for "
                          "feature axes, last axis first (negative pads crop: slice instead)")
    before, after = [0] * rank, [0] * rank
    for k in range(len(pad) // 2):  # pairs run from the last axis backwards
        before[rank - 1 - k], after[rank - 1 - k] = int(pad[2 * k]), int(pad[2 * k + 1])
    value = a.get("value")
    c.emit(ir.Pad, n, (c.value(a["self"]),), before=tuple(before), after=tuple(after),
           value=0.0 if value is None else float(value))


def _layer_norm(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    k = len(a["normalized_shape"])
    ins = (c.value(a["input"]),)
    if a["weight"] is not None:
        ins += (c.value(a["weight"]),)
    if a["bias"] is not None:
        if a["weight"] is None:
            ones = np.ones(tuple(a["normalized_shape"]), np.float32)
            ins += (c.param(n.name + ".weight", f"{n.name}.weight", ones),)
        ins += (c.value(a["bias"]),)
    if n.target == aten.native_layer_norm.default:  # (out, mean, rstd): only out is supported
        c.tuples[n.name] = (c.emit(ir.LayerNorm, n, ins, out=c.values(n.name), axes=k, eps=float(a["eps"])),
                            None, None)
    else:
        c.emit(ir.LayerNorm, n, ins, axes=k, eps=float(a["eps"]))


def _cat(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    rank = len(c.shape(a["tensors"][0]))
    axis = a["dim"] % rank
    if axis == 0:
        raise Unsupported("concatenation along the batch axis 0; join along a feature axis (dim >= 1)")
    c.emit(ir.Concat, n, tuple(c.value(t) for t in a["tensors"]), axis=axis)


def _softmax(c: TorchImporter, n: fx.Node) -> None:
    axis = n.args[1] % len(c.shape(n.args[0]))
    if axis == 0:
        raise Unsupported("softmax over the batch axis 0; use a feature axis (dim >= 1)")
    c.emit(ir.Softmax, n, (c.value(n.args[0]),), axis=axis)


def _identity(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("train"):
        raise Unsupported("dropout in training mode; call model.eval() before exporting")
    dtype = a.get("dtype")
    if dtype is not None and dtype != torch.float32:
        raise Unsupported(f"conversion to {dtype}; edgert graphs compute in float32")
    c.alias(n, n.args[0])


CONVERTERS: dict[Any, Callable[[TorchImporter, fx.Node], None]] = {
    aten.conv2d.default: _conv,
    aten.conv2d.padding: _conv,
    aten.convolution.default: _conv,
    aten.conv1d.default: _conv,
    aten.conv1d.padding: _conv,
    aten.conv_transpose2d.input: _conv_transpose2d,
    aten.upsample_nearest2d.vec: _upsample,
    aten.upsample_nearest2d.default: _upsample,
    aten.upsample_bilinear2d.vec: _upsample,
    aten.upsample_bilinear2d.default: _upsample,
    aten.linear.default: _linear,
    aten.addmm.default: _addmm,
    aten.mm.default: _matmul,
    aten.matmul.default: _matmul,
    aten.bmm.default: _matmul,
    aten.batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.relu.default: _unary(ir.Relu),
    aten.relu_.default: _unary(ir.Relu),
    aten.relu6.default: _unary(ir.Clip, lo=0.0, hi=6.0),
    aten.hardtanh.default: _hardtanh,
    aten.hardtanh_.default: _hardtanh,
    aten.clamp.default: _clamp,
    aten.sigmoid.default: _unary(ir.Sigmoid),
    aten.sigmoid_.default: _unary(ir.Sigmoid),
    aten.tanh.default: _unary(ir.Tanh),
    aten.tanh_.default: _unary(ir.Tanh),
    aten.max_pool2d.default: _max_pool,
    aten.max_pool2d_with_indices.default: _max_pool,
    aten.avg_pool2d.default: _avg_pool,
    aten.adaptive_avg_pool2d.default: _adaptive_avg_pool,
    aten._adaptive_avg_pool2d.default: _adaptive_avg_pool,
    aten.mean.dim: _mean,
    aten.flatten.using_ints: _reshape,
    aten.view.default: _reshape,
    aten.reshape.default: _reshape,
    aten._unsafe_view.default: _reshape,
    aten.squeeze.dim: _reshape,
    aten.squeeze.dims: _reshape,
    aten.unsqueeze.default: _reshape,
    aten.add.Tensor: _add,
    aten.add_.Tensor: _add,
    aten.add.Scalar: _add,
    aten.mul.Tensor: _binary(ir.Mul),
    aten.mul_.Tensor: _binary(ir.Mul),
    aten.mul.Scalar: _binary(ir.Mul),
    aten.sub.Tensor: _binary(ir.Sub),
    aten.sub_.Tensor: _binary(ir.Sub),
    aten.sub.Scalar: _binary(ir.Sub),
    aten.rsub.Scalar: _binary(ir.Sub),
    aten.rsub.Tensor: _binary(ir.Sub),
    aten.div.Tensor: _binary(ir.Div),
    aten.div_.Tensor: _binary(ir.Div),
    aten.div.Scalar: _binary(ir.Div),
    aten.div.Tensor_mode: _binary(ir.Div),
    aten.silu.default: _unary(ir.Silu),
    aten.silu_.default: _unary(ir.Silu),
    aten.hardswish.default: _unary(ir.Hardswish),
    aten.hardswish_.default: _unary(ir.Hardswish),
    aten.hardsigmoid.default: _unary(ir.Hardsigmoid),
    aten.hardsigmoid_.default: _unary(ir.Hardsigmoid),
    aten.gelu.default: _gelu,
    aten.gelu_.default: _gelu,
    aten.leaky_relu.default: _leaky_relu,
    aten.leaky_relu_.default: _leaky_relu,
    aten.prelu.default: _prelu,
    aten._prelu_kernel.default: _prelu,
    aten.permute.default: _permute,
    aten.transpose.int: _permute,
    aten.constant_pad_nd.default: _pad,
    aten.pad.default: _pad,
    aten.sum.dim_IntList: _sum,
    aten.layer_norm.default: _layer_norm,
    aten.native_layer_norm.default: _layer_norm,
    aten.cat.default: _cat,
    aten.softmax.int: _softmax,
    aten._softmax.default: _softmax,
    aten.dropout.default: _identity,
    aten.feature_dropout.default: _identity,
    aten.alpha_dropout.default: _identity,
    aten.clone.default: _identity,
    aten.alias.default: _identity,
    aten.detach.default: _identity,
    aten.detach_.default: _identity,
    aten.lift_fresh_copy.default: _identity,
    aten._to_copy.default: _identity,
    aten.to.dtype: _identity,
}

# Layers from edgert.nn export as custom ops; each family's converters live in their own module and
# add themselves to CONVERTERS on import.
from edgert.compilers.frontends import torch_shift  # noqa: E402,F401

from edgert.compilers.frontends.torch_binary import BINARY_CONVERTERS  # noqa: E402  (edgert.nn layers)

CONVERTERS.update(BINARY_CONVERTERS)
