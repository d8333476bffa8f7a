"""Reverse mode over a compiled IR graph in NumPy: the gradients an adaptation step needs, no torch.

    grads = backward(graph, values, seeds, wrt, params)

``seeds`` are dL/d(tensor) (e.g. for the logits), ``wrt`` names tensors and/or parameters whose
gradient is wanted. Only the nodes between the wanted names and the seeds are visited, deepest first.
Each rule reads some forward values: outputs of cheap nodes (elementwise, pooling, reshape, batch
norm) are recomputed from their inputs when ``values`` lacks them; anything else (conv2d and linear
outputs, graph inputs) must be given, and ``needed_values`` lists those names so the compiler can
keep them as taps. Arithmetic follows the arrays' dtype: float32 on the device, float64 in tests.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numba
import numpy as np

from edgert import ir
from edgert.errors import EdgertError
from edgert.ops.reference import avg_pool_divisor, eval_node

# outputs recomputed from their inputs when a rule needs them: each costs about one read of its input
CHEAP = (ir.Relu, ir.Clip, ir.Sigmoid, ir.Tanh, ir.Softmax, ir.BatchNorm, ir.MaxPool2d, ir.AvgPool2d,
         ir.AdaptiveAvgPool2d, ir.Flatten, ir.Reshape, ir.Add, ir.Concat)

Get = Callable[[str], np.ndarray]


def backward(graph: ir.Graph, values: Mapping[str, np.ndarray], seeds: Mapping[str, np.ndarray],
             wrt: Iterable[str], params: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """dL/d(name) for every name in ``wrt``, given seeds dL/d(tensor) and the forward ``values``."""
    return Backward(graph, seeds, wrt)(values, seeds, params)


def needed_values(graph: ir.Graph, seeds: Iterable[str], wrt: Iterable[str], given: Iterable[str] = ()) -> list[str]:
    """The forward tensors (graph inputs included) ``backward`` must be given, in graph order; names in
    ``given`` are taken as given rather than recomputed from their inputs."""
    return Backward(graph, seeds, wrt, given).needed


class Backward:
    """The walk for fixed seeds and wanted names, planned once and run per step."""

    def __init__(self, graph: ir.Graph, seeds: Iterable[str], wrt: Iterable[str], given: Iterable[str] = ()):
        self.graph, self.seeds, self.wrt = graph, list(seeds), list(dict.fromkeys(wrt))
        self.given = set(given)  # cheap outputs that will be given all the same (kept, not recomputed)
        self.specs = graph.infer_specs()
        unknown = [n for n in self.seeds + self.wrt if n not in self.specs]
        if unknown:
            raise EdgertError(f"backward: {unknown} name no tensor or parameter of this graph")
        self.producers = graph.producers()
        depends = set(self.wrt)  # values that depend on a wanted name
        for node in graph.nodes:
            if any(i in depends for i in node.inputs):
                depends.add(node.output)
        live = set(self.seeds)  # values with a gradient flowing back from a seed
        self.steps: list[tuple[ir.Node, tuple[bool, ...]]] = []
        for node in reversed(graph.nodes):
            if node.output in live and node.output in depends:
                want = tuple(i in depends for i in node.inputs)
                if any(want) and node.op not in RULES:
                    raise EdgertError(f"backward has no rule for {node.op} {node.name!r}, which lies between "
                                      f"the seeds and {self.wrt}; adapt only layers after it")
                self.steps.append((node, want))
                live.update(i for i, w in zip(node.inputs, want) if w)
        uses: dict[str, int] = {}
        for node in graph.nodes:
            for i in node.inputs:
                uses[i] = uses.get(i, 0) + 1
        # wanted parameters read once: their gradient is complete as soon as that rule gives it
        self._once = {w for w in self.wrt if w in graph.params and uses.get(w) == 1}
        unreached = [w for w in self.wrt if w not in live]
        if unreached:
            raise EdgertError(f"backward: no path from the seeds {self.seeds} back to {unreached}")
        per_step = [READS[node.op](node, want) if any(want) else [] for node, want in self.steps]
        self._read_later = [set().union(*per_step[k + 1:]) for k in range(len(per_step))]
        reads = [r for names in per_step for r in names]
        leaves = self._leaves(reads)
        order = [n for n, _ in graph.inputs] + [node.output for node in graph.nodes]
        self.needed = [n for n in order if n in leaves]

    def _leaves(self, names: Iterable[str]) -> set[str]:
        """The given forward values these names come from once cheap outputs are recomputed."""
        out: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            node = self.producers.get(name)
            if name in self.graph.params or name in out:
                continue
            if isinstance(node, CHEAP) and name not in self.given:
                todo.extend(node.inputs)
            else:
                out.add(name)
        return out

    def __call__(self, values: Mapping[str, np.ndarray], seeds: Mapping[str, np.ndarray],
                 params: Mapping[str, np.ndarray] | None = None,
                 reduce: Callable[[str, np.ndarray], object] | None = None,
                 into_seeds: bool = False) -> dict[str, np.ndarray]:
        """The gradients; with ``reduce``, ``reduce(name, grad)`` in place of each wanted gradient, taken
        as soon as it is complete, so a full activation gradient need not outlive its step. With
        ``into_seeds`` the gradient arriving at a seeded tensor is added into the seed array in place
        (the caller gives it up) rather than into a new array of its size."""
        params = self.graph.params if params is None else params
        if set(seeds) != set(self.seeds):
            raise EdgertError(f"backward was planned for seeds {self.seeds}, got {sorted(seeds)}")
        cache: dict[str, np.ndarray] = {}

        def get(name: str) -> np.ndarray:
            if name in values:
                return values[name]
            if name in params:
                return params[name]
            if name in cache:
                return cache[name]
            node = self.producers.get(name)
            if not isinstance(node, CHEAP):
                made = f"the output of {node.op} {node.name!r}" if node else "a graph input"
                raise EdgertError(f"backward needs the forward value {name!r} ({made}), which is not among "
                                  f"the values given ({sorted(values)}); keep it as a tap (needed_values "
                                  "lists what to tap)")
            args = [get(i) for i in node.inputs]
            if isinstance(node, ir.Add) and len(args) == 2:  # in the values' dtype: the reference adds in float64
                cache[name] = np.add(*args)
            else:
                cache[name] = eval_node(node, args, self.specs[name]).astype(args[0].dtype, copy=False)
            return cache[name]

        grads = {k: np.asarray(v) for k, v in seeds.items()}
        owned = {k for k, v in grads.items() if v.flags.writeable} if into_seeds else ()
        done: dict[str, object] = {}
        for k, (node, want) in enumerate(self.steps):
            g = grads.pop(node.output)
            if node.output in self.wrt:
                done[node.output] = reduce(node.output, g) if reduce else g
                if not any(want):  # the walk ends here: nothing before this node is wanted
                    continue
            for name, d in zip(node.inputs, RULES[node.op](node, g, want, get, self._shape(g))):
                if d is not None and name in self._once:
                    done[name] = reduce(name, d) if reduce else d
                elif d is not None and name in owned and d.shape == grads[name].shape:
                    np.add(grads[name], d, out=grads[name])
                elif d is not None:
                    grads[name] = grads[name] + d if name in grads else d
            del g
            for name in [c for c in cache if c not in self._read_later[k]]:
                del cache[name]  # recomputed again should a later rule need it
        for w in self.wrt:
            if w not in done:
                done[w] = reduce(w, grads[w]) if reduce else grads[w]
        del get  # it refers to itself: left to the cycle collector, it would keep the cache and values alive
        return done  # type: ignore[return-value]

    def _shape(self, g: np.ndarray) -> Callable[[str], tuple[int, ...]]:
        """Full shape of a value at the batch size of this gradient."""
        n = g.shape[0]
        return lambda name: tuple(n if d is None else d for d in self.specs[name].shape)


# -- rules: (node, dL/dy, which inputs need a gradient, get value, shape of value) -> dL/d(inputs) ------

def _channel(a: np.ndarray, ndim: int) -> np.ndarray:
    return a.reshape((1, -1) + (1,) * (ndim - 2))


def _sum_but_channel(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=(0,) + tuple(range(2, a.ndim)))


def _add_into(view: np.ndarray, part: np.ndarray, where: np.ndarray | None = None) -> None:
    """view += part (where ``where``), one sample at a time: NumPy buffers a whole strided in-place
    add (twice the part's size), one sample's buffer is small."""
    for k in range(len(view)):
        np.add(view[k], part[k], out=view[k], where=True if where is None else where[k])


def _conv2d(node: ir.Conv2d, g, want, get: Get, shape):
    n, c, h, wd = shape(node.inputs[0])
    w = get(node.inputs[1])
    o, cg, kh, kw = w.shape
    groups, og = node.groups, o // node.groups
    (sh, sw), (dh, dw), (t, l, b, r) = node.stride, node.dilation, node.padding
    oh, ow = g.shape[2:]
    gg = g.reshape(n, groups, og, oh * ow)  # per sample and group, one matmul per kernel tap; no copy of g
    dtype = np.result_type(g, w)

    def tap(a: np.ndarray, i: int, j: int) -> np.ndarray:
        """The input positions kernel tap (i, j) touches, in the padded frame."""
        return a[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]

    dx = dw_ = db = None
    if want[0]:
        wt = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4)  # [groups, cg, og, kh, kw]
        dxp = np.zeros((n, c, h + t + b, wd + l + r), dtype)
        for i in range(kh):
            for j in range(kw):
                _add_into(tap(dxp, i, j), (wt[:, :, :, i, j] @ gg).reshape(n, c, oh, ow))
        dx = dxp[:, :, t:t + h, l:l + wd]
    if want[1]:
        x = get(node.inputs[0])
        xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))) if t or l or b or r else x
        dw_ = np.empty((o, cg, kh, kw), dtype)
        for i in range(kh):
            for j in range(kw):
                xs = tap(xp, i, j).reshape(n, groups, cg, oh * ow).transpose(0, 1, 3, 2)
                if n == 1:  # straight into dw (a batch would need the per-sample products summed)
                    np.matmul(gg[0], xs[0], out=dw_[:, :, i, j].reshape(groups, og, cg))
                else:
                    dw_[:, :, i, j] = (gg @ xs).sum(axis=0).reshape(o, cg)
    if len(want) == 3 and want[2]:
        db = _sum_but_channel(g)
    return [dx, dw_, db][:len(want)]


def _linear(node: ir.Linear, g, want, get: Get, shape):
    g2 = g.reshape(-1, g.shape[-1])
    dx = dw = db = None
    if want[0]:
        dx = (g2 @ get(node.inputs[1])).reshape(shape(node.inputs[0]))
    if want[1]:
        x = get(node.inputs[0])
        dw = g2.T @ x.reshape(-1, x.shape[-1])
    if len(want) == 3 and want[2]:
        db = g2.sum(axis=0)
    return [dx, dw, db][:len(want)]


def _batch_norm(node: ir.BatchNorm, g, want, get: Get, shape):
    """Eval-mode BatchNorm: mean and var are constants of the forward, so this is a per-channel affine."""
    gamma, var = get(node.inputs[1]), get(node.inputs[4])
    inv = 1.0 / np.sqrt(var + node.eps)
    out: list = [None] * 5
    if want[0]:
        out[0] = g * _channel(gamma * inv, g.ndim)
    if want[1] or want[4]:
        centered = get(node.inputs[0]) - _channel(get(node.inputs[3]), g.ndim)
        gc = _sum_but_channel(g * centered)
        if want[1]:
            out[1] = gc * inv
        if want[4]:
            out[4] = -0.5 * gc * gamma * inv ** 3
    if want[2] or want[3]:
        gs = _sum_but_channel(g)
        out[2] = gs if want[2] else None
        out[3] = -gs * gamma * inv if want[3] else None
    return out


def _masked(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """g where mask, else 0: one output buffer and the mask (g * mask would also cast the mask)."""
    out = np.zeros(mask.shape, g.dtype)
    np.copyto(out, g, where=mask)
    return out


@numba.njit(cache=True, nogil=True)
def _relu_grad4(g: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    n, c, h, w = out.shape
    for i in range(n):
        for j in range(c):
            for k in range(h):
                for m in range(w):
                    out[i, j, k, m] = g[i, j, k, m] if x[i, j, k, m] > 0 else 0


def _relu(node, g, want, get: Get, shape):
    """g where the input (a tap more often than the output) is > 0; in one pass with no boolean mask
    (NumPy's masked copy needs the mask, and its ufuncs buffer a broadcast g: a gradient's size again).
    Up to rank 4, as views (trailing axes of 1 never copy a strided gradient)."""
    x = get(node.inputs[0])
    if x.ndim > 4:
        return [_masked(g, x > 0)]
    out = np.empty(x.shape, g.dtype)
    four = x.shape + (1,) * (4 - x.ndim)
    _relu_grad4(np.broadcast_to(g, x.shape).reshape(four), x.reshape(four), out.reshape(four))
    return [out]


def _clip(node: ir.Clip, g, want, get: Get, shape):
    x = get(node.inputs[0])
    return [_masked(g, (x > node.lo) & (x < node.hi))]


def _sigmoid(node, g, want, get: Get, shape):
    y = get(node.output)
    return [g * y * (1 - y)]


def _tanh(node, g, want, get: Get, shape):
    y = get(node.output)
    return [g * (1 - y * y)]


def _softmax(node: ir.Softmax, g, want, get: Get, shape):
    y = get(node.output)
    return [y * (g - (g * y).sum(axis=node.axis, keepdims=True))]


def _reshape(node, g, want, get: Get, shape):
    return [g.reshape(shape(node.inputs[0]))]


def _unbroadcast(g: np.ndarray, to: tuple[int, ...]) -> np.ndarray:
    g = g.sum(axis=tuple(range(g.ndim - len(to)))) if g.ndim > len(to) else g
    axes = tuple(k for k, (a, b) in enumerate(zip(g.shape, to)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _add(node, g, want, get: Get, shape):
    return [_unbroadcast(g, shape(i)) if w else None for i, w in zip(node.inputs, want)]


def _concat(node: ir.Concat, g, want, get: Get, shape):
    cuts = np.cumsum([shape(i)[node.axis] for i in node.inputs])[:-1]
    return [p if w else None for p, w in zip(np.split(g, cuts, axis=node.axis), want)]


def _padded_frame(node, h: int, w: int, out_hw) -> tuple[int, int]:
    """Rows and columns of the padded input a pool reads (ceil_mode may read past the padding)."""
    (kh, kw), (sh, sw) = node.kernel, node.stride
    dh, dw = getattr(node, "dilation", (1, 1))
    t, l, b, r = node.padding
    return (max(h + t + b, (out_hw[0] - 1) * sh + dh * (kh - 1) + 1),
            max(w + l + r, (out_hw[1] - 1) * sw + dw * (kw - 1) + 1))


def _pool_tap(a: np.ndarray, node, i: int, j: int, out_hw) -> np.ndarray:
    (sh, sw), (dh, dw) = node.stride, getattr(node, "dilation", (1, 1))
    return a[:, :, i * dh:i * dh + sh * (out_hw[0] - 1) + 1:sh, j * dw:j * dw + sw * (out_hw[1] - 1) + 1:sw]


@numba.njit(cache=True, nogil=True)
def _max_pool_grad(x, g, kh, kw, sh, sw, dh, dw, t, l, dx):
    n, c, h, w = x.shape
    for a in range(n):
        for ch in range(c):
            for i in range(g.shape[2]):
                for j in range(g.shape[3]):
                    best, bi, bj = -np.inf, -1, -1
                    for u in range(kh):
                        r = i * sh + u * dh - t
                        if 0 <= r < h:
                            for v in range(kw):
                                q = j * sw + v * dw - l
                                if 0 <= q < w and x[a, ch, r, q] > best:
                                    best, bi, bj = x[a, ch, r, q], r, q
                    if bi >= 0:
                        dx[a, ch, bi, bj] += g[a, ch, i, j]


def _max_pool2d(node: ir.MaxPool2d, g, want, get: Get, shape):
    """The gradient goes to the first maximum of each window (row by row), as in PyTorch; one pass over
    the windows (comparing with a recomputed output took a reference pool's stacked windows)."""
    x = get(node.inputs[0])
    dx = np.zeros(x.shape, g.dtype)
    (kh, kw), (sh, sw), (dh, dw) = node.kernel, node.stride, getattr(node, "dilation", (1, 1))
    _max_pool_grad(x, g, kh, kw, sh, sw, dh, dw, node.padding[0], node.padding[1], dx)
    return [dx]


def _avg_pool2d(node: ir.AvgPool2d, g, want, get: Get, shape):
    n, c, h, w = shape(node.inputs[0])
    t, l = node.padding[:2]
    out_hw = g.shape[2:]
    gd = g / avg_pool_divisor(node, h, w, out_hw).astype(g.dtype)
    dxp = np.zeros((n, c) + _padded_frame(node, h, w, out_hw), g.dtype)
    for i in range(node.kernel[0]):
        for j in range(node.kernel[1]):
            _add_into(_pool_tap(dxp, node, i, j, out_hw), gd)
    return [dxp[:, :, t:t + h, l:l + w]]


def _adaptive_avg_pool2d(node: ir.AdaptiveAvgPool2d, g, want, get: Get, shape):
    n, c, h, w = shape(node.inputs[0])
    oh, ow = node.output_size
    if (oh, ow) == (1, 1):  # global pooling: a read-only broadcast view, no [N, C, H, W] buffer
        return [np.broadcast_to(g / (h * w), (n, c, h, w))]
    dx = np.zeros((n, c, h, w), g.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            dx[:, :, h0:h1, w0:w1] += (g[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
    return [dx]


RULES: dict[str, Callable] = {
    "conv2d": _conv2d, "linear": _linear, "batch_norm": _batch_norm, "relu": _relu, "clip": _clip,
    "sigmoid": _sigmoid, "tanh": _tanh, "softmax": _softmax, "flatten": _reshape, "reshape": _reshape,
    "add": _add, "concat": _concat, "max_pool2d": _max_pool2d, "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
}


def _bn_reads(node: ir.BatchNorm, want) -> list[str]:
    x, gamma, _, mean, var = node.inputs
    return [gamma, var] + ([x, mean] if want[1] or want[4] else []) + ([mean] if want[3] else [])


# the forward values each rule reads (given which inputs need a gradient); shapes come from the specs
READS: dict[str, Callable[[ir.Node, tuple[bool, ...]], list[str]]] = {
    "conv2d": lambda n, w: [n.inputs[1]] * w[0] + [n.inputs[0]] * w[1],
    "linear": lambda n, w: [n.inputs[1]] * w[0] + [n.inputs[0]] * w[1],
    "batch_norm": _bn_reads,
    "relu": lambda n, w: [n.inputs[0]], "sigmoid": lambda n, w: [n.output], "tanh": lambda n, w: [n.output],
    "softmax": lambda n, w: [n.output], "clip": lambda n, w: [n.inputs[0]],
    "max_pool2d": lambda n, w: [n.inputs[0]],
    "flatten": lambda n, w: [], "reshape": lambda n, w: [], "add": lambda n, w: [], "concat": lambda n, w: [],
    "avg_pool2d": lambda n, w: [], "adaptive_avg_pool2d": lambda n, w: [],
}
