"""Plain NumPy execution of an ir.Graph: the arbiter every backend is checked against.

Float ops accumulate in float64 and return float32, so the reference is at least as exact as any
backend. Clarity over speed: this is for tests and for checking compiled artifacts.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, Mapping

import numpy as np

from edgert import ir
from edgert.errors import InternalError


def _pad(x: np.ndarray, padding: tuple[int, int, int, int], value: float) -> np.ndarray:
    t, l, b, r = padding
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _windows(x: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """View of x [N, C, H, W] as [N, C, oh, ow, kh, kw] windows (padding already applied)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    n, c = x.shape[:2]
    sn, sc, s_h, s_w = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (sn, sc, s_h * sh, s_w * sw, s_h * dh, s_w * dw), writeable=False)


def conv2d_ref(x, w, b, node: ir.Conv2d, out_hw) -> np.ndarray:
    xp = _pad(x.astype(np.float64), node.padding, 0.0)
    o, cg, kh, kw = w.shape
    g = node.groups
    win = _windows(xp, (kh, kw), node.stride, node.dilation, out_hw)  # n c oh ow kh kw
    n = x.shape[0]
    win = win.reshape(n, g, cg, *out_hw, kh, kw)
    wg = w.astype(np.float64).reshape(g, o // g, cg, kh, kw)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, *out_hw)
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None, None]
    return y


def max_pool2d_ref(x, node: ir.MaxPool2d, out_hw) -> np.ndarray:
    xp = _pad(x, node.padding, -np.inf)
    xp = _extend_for_ceil(xp, node.kernel, node.stride, node.dilation, out_hw, -np.inf)
    return _windows(xp, node.kernel, node.stride, node.dilation, out_hw).max(axis=(4, 5))


def _extend_for_ceil(xp, kernel, stride, dilation, out_hw, value):
    """Pad the bottom/right so ceil_mode's last (partial) window has memory behind it."""
    need_h = (out_hw[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    need_w = (out_hw[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    eh, ew = max(0, need_h - xp.shape[2]), max(0, need_w - xp.shape[3])
    if eh or ew:
        xp = np.pad(xp, ((0, 0), (0, 0), (0, eh), (0, ew)), constant_values=value)
    return xp


def avg_pool2d_ref(x, node: ir.AvgPool2d, out_hw) -> np.ndarray:
    """PyTorch's divisor: the window clipped to the padded input (count_include_pad) or to the input."""
    h, w = x.shape[2:]
    xp = _extend_for_ceil(_pad(x.astype(np.float64), node.padding, 0.0), node.kernel, node.stride,
                          (1, 1), out_hw, 0.0)
    sums = _windows(xp, node.kernel, node.stride, (1, 1), out_hw).sum(axis=(4, 5))
    return sums / avg_pool_divisor(node, h, w, out_hw)


def avg_pool_divisor(node: ir.AvgPool2d, h: int, w: int, out_hw) -> np.ndarray:
    """[oh, ow] count each output of an average pool over an h x w input is divided by."""
    t, l, b, r = node.padding
    (kh, kw), (sh, sw) = node.kernel, node.stride
    div = np.empty(out_hw)
    for i in range(out_hw[0]):
        h0 = i * sh - t
        h1 = min(h0 + kh, h + b)
        for j in range(out_hw[1]):
            w0 = j * sw - l
            w1 = min(w0 + kw, w + r)
            if node.count_include_pad:
                div[i, j] = (h1 - h0) * (w1 - w0)
            else:
                div[i, j] = (min(h1, h) - max(h0, 0)) * (min(w1, w) - max(w0, 0))
    return div


def adaptive_avg_pool2d_ref(x, node: ir.AdaptiveAvgPool2d) -> np.ndarray:
    n, c, h, w = x.shape
    oh, ow = node.output_size
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))
    return y


def batch_norm_ref(x, gamma, beta, mean, var, eps) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    f = lambda a: a.astype(np.float64).reshape(shape)  # noqa: E731
    return (x - f(mean)) / np.sqrt(f(var) + eps) * f(gamma) + f(beta)


def softmax_ref(x, axis) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is exact in float64


def gelu_ref(x, approximate: str) -> np.ndarray:
    x = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm_ref(x, affine: list[np.ndarray], node: ir.LayerNorm) -> np.ndarray:
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - node.axes, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + node.eps)
    if affine:
        y = y * affine[0]
    return y + affine[1] if len(affine) == 2 else y


def conv_transpose2d_ref(x, w, b, node: ir.ConvTranspose2d, out_hw) -> np.ndarray:
    """Each input pixel scatters its kernel-sized patch at stride steps; then the padding is cropped."""
    n, _, h, wd = x.shape
    _, o, kh, kw = w.shape
    (sh, sw), (ph, pw) = node.stride, node.padding
    full = np.zeros((n, o, (h - 1) * sh + kh + node.output_padding[0], (wd - 1) * sw + kw + node.output_padding[1]))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + (h - 1) * sh + 1:sh, j:j + (wd - 1) * sw + 1:sw] += np.einsum(
                "nchw,co->nohw", x64, w64[:, :, i, j])
    y = full[:, :, ph:ph + out_hw[0], pw:pw + out_hw[1]]
    return y + b.astype(np.float64)[None, :, None, None] if b is not None else y


def upsample_source(n_in: int, n_out: int, node: ir.Upsample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and the weight of the second (0 for nearest)."""
    i = np.arange(n_out)
    if node.mode == "nearest":
        src = (i * n_in) // n_out
        return src, src, np.zeros(n_out)
    if node.align_corners:
        pos = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        pos = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), pos - i0


def upsample_ref(x, node: ir.Upsample) -> np.ndarray:
    h0, h1, fh = upsample_source(x.shape[2], node.size[0], node)
    w0, w1, fw = upsample_source(x.shape[3], node.size[1], node)
    x = x.astype(np.float64)
    rows = x[:, :, h0] * (1 - fh)[:, None] + x[:, :, h1] * fh[:, None]
    return rows[:, :, :, w0] * (1 - fw) + rows[:, :, :, w1] * fw


def _eval(node: ir.Node, args: list[np.ndarray], out: ir.TensorSpec) -> np.ndarray:
    x = args[0]
    hw = out.shape[2:4]
    match node:
        case ir.Conv2d():
            return conv2d_ref(x, args[1], args[2] if len(args) == 3 else None, node, hw)
        case ir.Linear():
            y = x.astype(np.float64) @ args[1].astype(np.float64).T
            return y + args[2] if len(args) == 3 else y
        case ir.BatchNorm():
            return batch_norm_ref(*args, node.eps)
        case ir.Relu():
            return np.maximum(x, 0)
        case ir.Clip():
            return np.clip(x, node.lo, node.hi)
        case ir.Sigmoid():
            return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
        case ir.Tanh():
            return np.tanh(x.astype(np.float64))
        case ir.MaxPool2d():
            return max_pool2d_ref(x, node, hw)
        case ir.AvgPool2d():
            return avg_pool2d_ref(x, node, hw)
        case ir.AdaptiveAvgPool2d():
            return adaptive_avg_pool2d_ref(x, node)
        case ir.Flatten() | ir.Reshape():
            return x.reshape((x.shape[0],) + out.shape[1:])
        case ir.Add():
            return args[0].astype(np.float64) + args[1]
        case ir.Concat():
            return np.concatenate(args, axis=node.axis)
        case ir.MatMul():
            return args[0].astype(np.float64) @ args[1].astype(np.float64)
        case ir.Softmax():
            return softmax_ref(x, node.axis)
        case ir.Mul():
            return args[0].astype(np.float64) * args[1]
        case ir.Sub():
            return args[0].astype(np.float64) - args[1]
        case ir.Div():
            with np.errstate(divide="ignore", invalid="ignore"):
                return args[0].astype(np.float64) / args[1]
        case ir.Silu():
            x = x.astype(np.float64)
            return x / (1.0 + np.exp(-x))
        case ir.Hardswish():
            x = x.astype(np.float64)
            return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
        case ir.Hardsigmoid():
            return np.clip(node.alpha * x.astype(np.float64) + node.beta, 0.0, 1.0)
        case ir.Gelu():
            return gelu_ref(x, node.approximate)
        case ir.LeakyRelu():
            x = x.astype(np.float64)
            return np.where(x >= 0, x, node.slope * x)
        case ir.Prelu():
            x = x.astype(np.float64)
            slope = args[1].astype(np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
            return np.where(x >= 0, x, slope * x)
        case ir.Transpose():
            return np.transpose(x, node.perm)
        case ir.Pad():
            return np.pad(x, list(zip(node.before, node.after)), constant_values=node.value)
        case ir.Mean():
            return x.astype(np.float64).mean(axis=node.axes, keepdims=node.keepdim)
        case ir.Sum():
            return x.astype(np.float64).sum(axis=node.axes, keepdims=node.keepdim)
        case ir.LayerNorm():
            return layer_norm_ref(x, args[1:], node)
        case ir.ConvTranspose2d():
            return conv_transpose2d_ref(x, args[1], args[2] if len(args) == 3 else None, node, hw)
        case ir.Upsample():
            return upsample_ref(x, node)
    raise InternalError(f"run_graph_ref has no rule for op {node.op!r}")


# Op families (binary, shift, spiking) register their reference rules here by op name, from their
# own module edgert.ops.<family>: fn(node, args, out_spec, state) -> output, where ``state`` is a
# dict kept per node across time steps (empty for stateless ops).
Rule = Callable[[ir.Node, list[np.ndarray], ir.TensorSpec, dict], np.ndarray]
EXTRA_RULES: dict[str, Rule] = {}


def _rule(node: ir.Node) -> Rule:
    if node.op not in EXTRA_RULES and node.family != "float":
        importlib.import_module(f"edgert.ops.{node.family}")
    return EXTRA_RULES.get(node.op) or (lambda n, args, spec, state: _eval(n, args, spec))


def eval_node(node: ir.Node, args: list[np.ndarray], out: ir.TensorSpec) -> np.ndarray:
    """One stateless node's output by its reference rule."""
    return _rule(node)(node, args, out, {})


def run_graph_ref(graph: ir.Graph, feeds: Mapping[str, np.ndarray],
                  state: dict[str, dict] | None = None) -> list[np.ndarray]:
    """Execute ``graph`` on ``feeds`` (graph input name -> array) and return its outputs in order.

    For a stateful graph this is one time step; pass the same ``state`` dict to every step.
    """
    state = {} if state is None else state
    specs = graph.infer_specs()
    env: dict[str, np.ndarray] = dict(graph.params)
    for name, spec in graph.inputs:
        if name not in feeds:
            raise InternalError(f"run_graph_ref: no value fed for graph input {name!r}")
        env[name] = np.asarray(feeds[name], dtype=spec.dtype)
    for node in graph.nodes:
        args = [env[i] for i in node.inputs]
        y = _rule(node)(node, args, specs[node.output], state.setdefault(node.name, {}))
        env[node.output] = np.asarray(y).astype(specs[node.output].dtype, copy=False)
    return [env[o] for o in graph.outputs]


def run_steps_ref(graph: ir.Graph, xs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run a stateful graph over inputs shaped [T, batch, ...] from a fresh state; stack each output."""
    state: dict[str, dict] = {}
    steps = len(next(iter(xs.values())))
    outs = [run_graph_ref(graph, {k: v[t] for k, v in xs.items()}, state) for t in range(steps)]
    return [np.stack([o[k] for o in outs]) for k in range(len(graph.outputs))]
