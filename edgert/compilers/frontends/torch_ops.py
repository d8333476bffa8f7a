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
        raise Unsupported("transposed convolution is not supported")
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
    x, other = n.args[0], n.args[1]
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


def _mean(c: TorchImporter, n: fx.Node) -> None:
    a = _args(n)
    shape = c.shape(a["self"])
    dims = sorted(d % len(shape) for d in (a["dim"] or ()))
    if len(shape) != 4 or dims != [2, 3]:
        raise Unsupported(f"mean over dims {a['dim']} of shape {shape}; edgert supports the mean over H and W "
                          "(dims (2, 3)) of an NCHW tensor, i.e. global average pooling")
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
    aten.linear.default: _linear,
    aten.addmm.default: _addmm,
    aten.mm.default: _matmul,
    aten.matmul.default: _matmul,
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
