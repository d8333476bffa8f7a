"""edgert's one IR: a Graph of frozen Nodes whose attributes fix their arithmetic exactly.

Every value in a graph is named. A name is either a graph input, a parameter (an array in
``Graph.params``, passed to the compiled code as a runtime input so adaptation can replace it), or
the output of exactly one node. Nodes are kept in topological order, so ``==`` compares structure.

Shapes are tuples of ints; dimension 0 of an activation may be ``None``, meaning "any batch size".
Layout is NCHW throughout, as in PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edgert.errors import IRValidationError

DTYPES = ("float32", "int32", "int64", "uint8", "uint64", "int8", "bool")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape and dtype of one value; ``shape[0] is None`` means a dynamic batch dimension."""

    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        for i, d in enumerate(self.shape):
            if d is None and i == 0:
                continue
            if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
                raise IRValidationError(
                    f"TensorSpec: dimension {i} is {d!r} in shape {self.shape}; dimensions are "
                    "non-negative ints, and only dimension 0 (the batch) may be None")
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        if self.dtype not in DTYPES:
            raise IRValidationError(f"TensorSpec: dtype {self.dtype!r} is not one of {DTYPES}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    def numel(self, batch: int = 1) -> int:
        """Number of elements, with a dynamic batch dimension taken as ``batch``."""
        return math.prod(batch if d is None else d for d in self.shape)

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: Mapping) -> "TensorSpec":
        return TensorSpec(tuple(d["shape"]), d["dtype"])


def _pair(v: Any, what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2:
        raise IRValidationError(f"{what} must be an int or a pair, got {v!r}")
    return (int(t[0]), int(t[1]))


def _quad(v: Any, what: str) -> tuple[int, int, int, int]:
    """Padding as (top, left, bottom, right); an int or an (h, w) pair is symmetric."""
    t = (v,) * 4 if isinstance(v, int) else tuple(v)
    if len(t) == 2:
        t = (t[0], t[1], t[0], t[1])
    if len(t) != 4:
        raise IRValidationError(f"{what} must be an int, an (h, w) pair or (top, left, bottom, right), "
                                f"got {v!r}")
    return tuple(int(x) for x in t)  # type: ignore[return-value]


def _broadcast(a: tuple, b: tuple, where: str) -> tuple:
    out = []
    a = (1,) * (len(b) - len(a)) + a
    b = (1,) * (len(a) - len(b)) + b
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise IRValidationError(f"{where}: shapes {a} and {b} do not broadcast")
    return tuple(out)


def _window_out(size: int, k: int, s: int, p0: int, p1: int, d: int, ceil_mode: bool) -> int:
    """Output length of a conv or pool window, with PyTorch's ceil_mode rule."""
    span = size + p0 + p1 - d * (k - 1) - 1
    if span < 0:
        raise IRValidationError(f"window of {k} (dilation {d}) does not fit input length {size} "
                                f"with padding ({p0}, {p1})")
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + p0:  # the last window must start inside the input or left padding
        out -= 1
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One operation: named inputs, one named output, attributes that fix its arithmetic."""

    op: ClassVar[str] = ""
    n_inputs: ClassVar[tuple[int, ...]] = (1,)  # allowed input counts
    family: ClassVar[str] = "float"  # edgert.ops.<family> holds its kernels and reference rules
    backends: ClassVar[tuple[str, ...]] = ("tvm",)  # who can run it, preferred first
    stateful: ClassVar[bool] = False  # keeps state across Engine.step calls (spiking neurons)
    name: str
    inputs: tuple[str, ...]
    output: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if len(self.inputs) not in self.n_inputs:
            raise IRValidationError(f"{self.op} {self.name!r}: takes {self.n_inputs} inputs, "
                                    f"got {len(self.inputs)}: {self.inputs}")
        self.check()

    def check(self) -> None:
        """Validate attributes; subclasses raise IRValidationError naming the fix."""

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        """Output spec from input specs (raises IRValidationError when they do not fit)."""
        return ins[0]

    def attrs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("name", "inputs", "output")}

    def to_json(self) -> dict:
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.attrs().items()}
        return {"op": self.op, "name": self.name, "inputs": list(self.inputs),
                "output": self.output, "attrs": attrs}

    def _fail(self, msg: str) -> None:
        raise IRValidationError(f"{self.op} {self.name!r}: {msg}")


def _need_rank(node: Node, spec: TensorSpec, rank: int, what: str = "input") -> None:
    if spec.rank != rank:
        node._fail(f"{what} must have rank {rank} (NCHW), got shape {spec.shape}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Conv2d(Node):
    """y = conv(x, w) + b; inputs (x, weight[O, C/groups, kh, kw], bias[O]?)."""

    op: ClassVar[str] = "conv2d"
    n_inputs: ClassVar[tuple[int, ...]] = (2, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def check(self) -> None:
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _quad(self.padding, "padding"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        if min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0 or self.groups < 1:
            self._fail(f"stride {self.stride} and dilation {self.dilation} must be >= 1, padding "
                       f"{self.padding} >= 0, groups {self.groups} >= 1")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x, w = ins[0], ins[1]
        _need_rank(self, x, 4)
        _need_rank(self, w, 4, "weight")
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        if c % self.groups or o % self.groups or cg != c // self.groups:
            self._fail(f"input has {c} channels and weight {w.shape} with groups={self.groups}; "
                       f"the weight needs shape (O, {c // max(self.groups, 1)}, kh, kw) with O "
                       f"divisible by groups")
        if len(ins) == 3 and ins[2].shape != (o,):
            self._fail(f"bias must have shape ({o},), got {ins[2].shape}")
        t, l, b, r = self.padding
        oh = _window_out(h, kh, self.stride[0], t, b, self.dilation[0], False)
        ow = _window_out(wd, kw, self.stride[1], l, r, self.dilation[1], False)
        return TensorSpec((n, o, oh, ow), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Linear(Node):
    """y = x @ w.T + b over the last axis; inputs (x, weight[O, K], bias[O]?)."""

    op: ClassVar[str] = "linear"
    n_inputs: ClassVar[tuple[int, ...]] = (2, 3)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x, w = ins[0], ins[1]
        if w.rank != 2 or x.rank < 2 or x.shape[-1] != w.shape[1]:
            self._fail(f"input {x.shape} and weight {w.shape} do not fit; the weight must be "
                       f"(out_features, {x.shape[-1] if x.rank else '?'})")
        if len(ins) == 3 and ins[2].shape != (w.shape[0],):
            self._fail(f"bias must have shape ({w.shape[0]},), got {ins[2].shape}")
        return TensorSpec(x.shape[:-1] + (w.shape[0],), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchNorm(Node):
    """Eval-mode batch norm over axis 1: y = (x - mean) / sqrt(var + eps) * gamma + beta.

    Inputs (x, gamma, beta, mean, var), each parameter of shape [C].
    """

    op: ClassVar[str] = "batch_norm"
    n_inputs: ClassVar[tuple[int, ...]] = (5,)
    eps: float = 1e-5

    def check(self) -> None:
        if not self.eps > 0:
            self._fail(f"eps={self.eps} must be > 0")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.rank < 2:
            self._fail(f"input needs a channel axis 1, got shape {x.shape}")
        for p in ins[1:]:
            if p.shape != (x.shape[1],):
                self._fail(f"parameters must have shape ({x.shape[1]},), got {p.shape}")
        return x


@dataclass(frozen=True, slots=True, kw_only=True)
class Relu(Node):
    """y = max(x, 0)."""

    op: ClassVar[str] = "relu"


@dataclass(frozen=True, slots=True, kw_only=True)
class Clip(Node):
    """y = min(max(x, lo), hi): relu6 is Clip(0, 6), hardtanh is Clip(-1, 1)."""

    op: ClassVar[str] = "clip"
    lo: float = -1.0
    hi: float = 1.0

    def check(self) -> None:
        if not self.lo <= self.hi:
            self._fail(f"lo={self.lo} must be <= hi={self.hi}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sigmoid(Node):
    """y = 1 / (1 + exp(-x))."""

    op: ClassVar[str] = "sigmoid"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tanh(Node):
    """y = tanh(x)."""

    op: ClassVar[str] = "tanh"


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxPool2d(Node):
    """Max over kernel windows; padding counts as -inf; ceil_mode as in PyTorch."""

    op: ClassVar[str] = "max_pool2d"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def check(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _quad(self.padding, "padding"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            self._fail(f"kernel {self.kernel}, stride {self.stride}, dilation {self.dilation} must be >= 1")
        # (top, left, bottom, right) against (kh, kw, kh, kw), PyTorch's rule
        if any(p < 0 or p * 2 > k for p, k in zip(self.padding, self.kernel * 2)):
            self._fail(f"padding {self.padding} must be between 0 and half the kernel {self.kernel}")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        _need_rank(self, x, 4)
        t, l, b, r = self.padding
        oh = _window_out(x.shape[2], self.kernel[0], self.stride[0], t, b, self.dilation[0], self.ceil_mode)
        ow = _window_out(x.shape[3], self.kernel[1], self.stride[1], l, r, self.dilation[1], self.ceil_mode)
        return TensorSpec((x.shape[0], x.shape[1], oh, ow), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class AvgPool2d(Node):
    """Mean over kernel windows; count_include_pad and ceil_mode as in PyTorch."""

    op: ClassVar[str] = "avg_pool2d"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True

    def check(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _quad(self.padding, "padding"))
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            self._fail(f"kernel {self.kernel} and stride {self.stride} must be >= 1, padding >= 0")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        _need_rank(self, x, 4)
        t, l, b, r = self.padding
        oh = _window_out(x.shape[2], self.kernel[0], self.stride[0], t, b, 1, self.ceil_mode)
        ow = _window_out(x.shape[3], self.kernel[1], self.stride[1], l, r, 1, self.ceil_mode)
        return TensorSpec((x.shape[0], x.shape[1], oh, ow), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveAvgPool2d(Node):
    """PyTorch's adaptive average pool: window i spans [floor(i*H/oh), ceil((i+1)*H/oh))."""

    op: ClassVar[str] = "adaptive_avg_pool2d"
    output_size: tuple[int, int] = (1, 1)

    def check(self) -> None:
        object.__setattr__(self, "output_size", _pair(self.output_size, "output_size"))
        if min(self.output_size) < 1:
            self._fail(f"output_size {self.output_size} must be >= 1")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        _need_rank(self, x, 4)
        return TensorSpec((x.shape[0], x.shape[1]) + self.output_size, x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flatten(Node):
    """Merge axes start_dim..end into one; start_dim >= 1 keeps the batch axis."""

    op: ClassVar[str] = "flatten"
    start_dim: int = 1

    def check(self) -> None:
        if self.start_dim < 1:
            self._fail(f"start_dim={self.start_dim}; flattening the batch axis is not supported, "
                       "use start_dim >= 1")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if self.start_dim >= x.rank:
            self._fail(f"start_dim={self.start_dim} is past the last axis of shape {x.shape}")
        return TensorSpec(x.shape[:self.start_dim] + (math.prod(x.shape[self.start_dim:]),), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reshape(Node):
    """Keep the batch axis, reshape the rest to ``shape`` (one entry may be -1)."""

    op: ClassVar[str] = "reshape"
    shape: tuple[int, ...] = ()

    def check(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if sum(d == -1 for d in self.shape) > 1 or any(d < -1 or d == 0 for d in self.shape):
            self._fail(f"shape {self.shape}: entries must be positive, with at most one -1")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        total = math.prod(x.shape[1:])
        known = math.prod(d for d in self.shape if d != -1)
        new = tuple(total // known if d == -1 else d for d in self.shape)
        if math.prod(new) != total:
            self._fail(f"cannot reshape {x.shape[1:]} (per sample) to {self.shape}")
        return TensorSpec((x.shape[0],) + new, x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Add(Node):
    """y = a + b with NumPy broadcasting."""

    op: ClassVar[str] = "add"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _broadcast_specs(self, ins)


def _broadcast_specs(node: Node, ins: Sequence[TensorSpec]) -> TensorSpec:
    """The output of an elementwise binary op: NumPy broadcasting, a shared dynamic batch kept."""
    a, b = ins
    where = f"{node.op} {node.name!r}"
    if a.rank == b.rank and a.shape[0] is None and b.shape[0] is None:
        return TensorSpec((None,) + _broadcast(a.shape[1:], b.shape[1:], where), a.dtype)
    return TensorSpec(_broadcast(a.shape, b.shape, where), a.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mul(Node):
    """y = a * b with NumPy broadcasting (squeeze-excite gating, scaling by a constant)."""

    op: ClassVar[str] = "mul"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _broadcast_specs(self, ins)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sub(Node):
    """y = a - b with NumPy broadcasting."""

    op: ClassVar[str] = "sub"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _broadcast_specs(self, ins)


@dataclass(frozen=True, slots=True, kw_only=True)
class Div(Node):
    """y = a / b with NumPy broadcasting (IEEE division: x / 0 is inf or nan)."""

    op: ClassVar[str] = "div"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _broadcast_specs(self, ins)


@dataclass(frozen=True, slots=True, kw_only=True)
class Concat(Node):
    """Join inputs along ``axis`` (>= 1: never the batch axis)."""

    op: ClassVar[str] = "concat"
    n_inputs: ClassVar[tuple[int, ...]] = tuple(range(1, 65))
    axis: int = 1

    def check(self) -> None:
        if self.axis < 1:
            self._fail(f"axis={self.axis}; give a non-negative axis >= 1 (the batch axis cannot be joined)")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        first = ins[0]
        for s in ins[1:]:
            if s.rank != first.rank or any(a != b for i, (a, b) in enumerate(zip(s.shape, first.shape))
                                           if i != self.axis):
                self._fail(f"shapes {[s.shape for s in ins]} differ outside axis {self.axis}")
        if self.axis >= first.rank:
            self._fail(f"axis {self.axis} is past the last axis of shape {first.shape}")
        shape = list(first.shape)
        shape[self.axis] = sum(s.shape[self.axis] for s in ins)
        return TensorSpec(tuple(shape), first.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Softmax(Node):
    """y = exp(x) / sum(exp(x)) along ``axis`` (>= 1)."""

    op: ClassVar[str] = "softmax"
    axis: int = 1

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        if not 1 <= self.axis < ins[0].rank:
            self._fail(f"axis={self.axis} must name a non-batch axis of shape {ins[0].shape}")
        return ins[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Silu(Node):
    """y = x * sigmoid(x) (also called swish)."""

    op: ClassVar[str] = "silu"


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardswish(Node):
    """y = x * min(max(x + 3, 0), 6) / 6, as in PyTorch and ONNX."""

    op: ClassVar[str] = "hardswish"


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardsigmoid(Node):
    """y = min(max(alpha * x + beta, 0), 1); PyTorch's is alpha = 1/6, beta = 1/2 (ONNX's default 0.2)."""

    op: ClassVar[str] = "hardsigmoid"
    alpha: float = 1.0 / 6.0
    beta: float = 0.5


GELU_FORMS = ("none", "tanh")


@dataclass(frozen=True, slots=True, kw_only=True)
class Gelu(Node):
    """y = x * Phi(x): exact with erf (approximate "none") or PyTorch's tanh form ("tanh")."""

    op: ClassVar[str] = "gelu"
    approximate: str = "none"

    def check(self) -> None:
        if self.approximate not in GELU_FORMS:
            self._fail(f"approximate={self.approximate!r}; give one of {GELU_FORMS}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeakyRelu(Node):
    """y = x where x >= 0, slope * x elsewhere."""

    op: ClassVar[str] = "leaky_relu"
    slope: float = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class Prelu(Node):
    """y = x where x >= 0, slope[c] * x elsewhere; inputs (x, slope[C] along axis 1, or slope[1])."""

    op: ClassVar[str] = "prelu"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x, slope = ins
        channels = x.shape[1] if x.rank >= 2 else 1
        if slope.shape not in ((1,), (channels,)):
            self._fail(f"slope has shape {slope.shape}; it needs shape (1,) or ({channels},) (axis 1 of "
                       f"the input {x.shape})")
        return x


@dataclass(frozen=True, slots=True, kw_only=True)
class Transpose(Node):
    """Permute the axes: output axis i is input axis perm[i]; perm[0] is 0 (the batch stays first)."""

    op: ClassVar[str] = "transpose"
    perm: tuple[int, ...] = ()

    def check(self) -> None:
        object.__setattr__(self, "perm", tuple(int(a) for a in self.perm))
        if sorted(self.perm) != list(range(len(self.perm))) or not self.perm or self.perm[0] != 0:
            self._fail(f"perm {self.perm} must be a permutation of 0..rank-1 that keeps the batch axis 0 first")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.rank != len(self.perm):
            self._fail(f"perm {self.perm} has {len(self.perm)} axes, the input {x.shape} has {x.rank}")
        return TensorSpec(tuple(x.shape[a] for a in self.perm), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pad(Node):
    """Constant padding: ``before[i]`` and ``after[i]`` values of ``value`` around axis i (never axis 0)."""

    op: ClassVar[str] = "pad"
    before: tuple[int, ...] = ()
    after: tuple[int, ...] = ()
    value: float = 0.0

    def check(self) -> None:
        object.__setattr__(self, "before", tuple(int(a) for a in self.before))
        object.__setattr__(self, "after", tuple(int(a) for a in self.after))
        if len(self.before) != len(self.after) or not self.before:
            self._fail(f"before {self.before} and after {self.after} need one entry per axis")
        if min(self.before + self.after) < 0 or self.before[0] or self.after[0]:
            self._fail(f"before {self.before} and after {self.after} must be >= 0 (no cropping) and 0 on "
                       "the batch axis")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.rank != len(self.before):
            self._fail(f"padding for {len(self.before)} axes, the input {x.shape} has {x.rank}")
        return TensorSpec((x.shape[0],) + tuple(d + b + a for d, b, a in
                                                 zip(x.shape[1:], self.before[1:], self.after[1:])), x.dtype)


def _reduce_check(node: Node) -> None:
    object.__setattr__(node, "axes", tuple(sorted(int(a) for a in node.axes)))
    if not node.axes or node.axes[0] < 1 or len(set(node.axes)) != len(node.axes):
        node._fail(f"axes {node.axes} must be distinct non-negative axes >= 1 (never the batch axis)")


def _reduce_infer(node: Node, ins: Sequence[TensorSpec]) -> TensorSpec:
    x = ins[0]
    if node.axes[-1] >= x.rank:
        node._fail(f"axes {node.axes} go past the last axis of shape {x.shape}")
    if node.keepdim:
        return TensorSpec(tuple(1 if i in node.axes else d for i, d in enumerate(x.shape)), x.dtype)
    return TensorSpec(tuple(d for i, d in enumerate(x.shape) if i not in node.axes), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mean(Node):
    """Mean over ``axes`` (>= 1); ``keepdim`` keeps them as size 1."""

    op: ClassVar[str] = "mean"
    axes: tuple[int, ...] = ()
    keepdim: bool = False

    def check(self) -> None:
        _reduce_check(self)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _reduce_infer(self, ins)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sum(Node):
    """Sum over ``axes`` (>= 1); ``keepdim`` keeps them as size 1."""

    op: ClassVar[str] = "sum"
    axes: tuple[int, ...] = ()
    keepdim: bool = False

    def check(self) -> None:
        _reduce_check(self)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        return _reduce_infer(self, ins)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerNorm(Node):
    """(x - mean) / sqrt(var + eps) over the last ``axes`` axes, then * gamma + beta when given;
    inputs (x, gamma?, beta?), each parameter shaped like those last axes."""

    op: ClassVar[str] = "layer_norm"
    n_inputs: ClassVar[tuple[int, ...]] = (1, 2, 3)
    axes: int = 1
    eps: float = 1e-5

    def check(self) -> None:
        if self.axes < 1 or not self.eps > 0:
            self._fail(f"axes={self.axes} must be >= 1 and eps={self.eps} > 0")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if self.axes >= x.rank:
            self._fail(f"normalizing the last {self.axes} axes of {x.shape} would take the batch axis")
        for p in ins[1:]:
            if p.shape != x.shape[-self.axes:]:
                self._fail(f"gamma and beta must have shape {x.shape[-self.axes:]}, got {p.shape}")
        return x


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvTranspose2d(Node):
    """PyTorch's ConvTranspose2d (groups 1, dilation 1): inputs (x, weight[C, O, kh, kw], bias[O]?);
    output H = (H_in - 1) * stride - 2 * padding + kh + output_padding (likewise W)."""

    op: ClassVar[str] = "conv_transpose2d"
    n_inputs: ClassVar[tuple[int, ...]] = (2, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    output_padding: tuple[int, int] = (0, 0)

    def check(self) -> None:
        for f in ("stride", "padding", "output_padding"):
            object.__setattr__(self, f, _pair(getattr(self, f), f))
        if min(self.stride) < 1 or min(self.padding) < 0 or any(
                not 0 <= op < s for op, s in zip(self.output_padding, self.stride)):
            self._fail(f"stride {self.stride} must be >= 1, padding {self.padding} >= 0 and output_padding "
                       f"{self.output_padding} between 0 and stride - 1")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x, w = ins[0], ins[1]
        _need_rank(self, x, 4)
        _need_rank(self, w, 4, "weight")
        if w.shape[0] != x.shape[1]:
            self._fail(f"weight {w.shape} must be (C_in={x.shape[1]}, C_out, kh, kw)")
        if len(ins) == 3 and ins[2].shape != (w.shape[1],):
            self._fail(f"bias must have shape ({w.shape[1]},), got {ins[2].shape}")
        hw = [(d - 1) * s - 2 * p + k + op for d, s, p, k, op in
              zip(x.shape[2:], self.stride, self.padding, w.shape[2:], self.output_padding)]
        if min(hw) < 1:
            self._fail(f"padding {self.padding} leaves no output for input {x.shape} and kernel {w.shape[2:]}")
        return TensorSpec((x.shape[0], w.shape[1], *hw), x.dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class MatMul(Node):
    """y = a @ b of two activations (attention's q k^T and p v): a [..., M, K], b [..., K, N], the same
    leading dims (no broadcasting); a constant b is a Linear instead."""

    op: ClassVar[str] = "matmul"
    n_inputs: ClassVar[tuple[int, ...]] = (2,)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        a, b = ins
        if a.rank < 2 or a.rank != b.rank or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            self._fail(f"operands {a.shape} and {b.shape} do not fit: they must be [..., M, K] and [..., K, N] "
                       "with the same leading dims (expand or reshape them to match)")
        return TensorSpec(a.shape[:-1] + b.shape[-1:], a.dtype)


UPSAMPLE_MODES = ("nearest", "bilinear")


@dataclass(frozen=True, slots=True, kw_only=True)
class Upsample(Node):
    """Resize H and W of NCHW to ``size``. nearest: source index floor(i * in / out) (ONNX asymmetric +
    floor, PyTorch 'nearest'); bilinear: source (i + 0.5) * in / out - 0.5 clamped at 0 (half_pixel,
    align_corners False) or i * (in - 1) / (out - 1) (align_corners True)."""

    op: ClassVar[str] = "upsample"
    size: tuple[int, int] = (1, 1)
    mode: str = "nearest"
    align_corners: bool = False

    def check(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "size"))
        if self.mode not in UPSAMPLE_MODES or min(self.size) < 1:
            self._fail(f"mode {self.mode!r} must be one of {UPSAMPLE_MODES} and size {self.size} >= 1")
        if self.align_corners and self.mode != "bilinear":
            self._fail("align_corners applies to bilinear only")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        _need_rank(self, x, 4)
        return TensorSpec(x.shape[:2] + self.size, x.dtype)


OPS: dict[str, type[Node]] = {cls.op: cls for cls in (
    Conv2d, Linear, BatchNorm, Relu, Clip, Sigmoid, Tanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
    Flatten, Reshape, Add, Concat, Softmax, Mul, Sub, Div, Silu, Hardswish, Hardsigmoid, Gelu, LeakyRelu,
    Prelu, Transpose, Pad, Mean, Sum, LayerNorm, ConvTranspose2d, Upsample, MatMul)}


def register_op(cls: type[Node]) -> type[Node]:
    """Make a Node class known to ``Graph.from_json`` (later op families register themselves)."""
    OPS[cls.op] = cls
    return cls


# Op families that live in their own modules; imported when an artifact names one of their ops.
FAMILY_MODULES = ("edgert.ops.binary", "edgert.ops.shift", "edgert.ops.spiking")


def _import_families() -> None:
    import importlib

    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the family exists but something it needs is missing
                raise


def node_from_json(d: Mapping) -> Node:
    if d["op"] not in OPS:
        _import_families()
    cls = OPS.get(d["op"])
    if cls is None:
        raise IRValidationError(f"unknown op kind {d['op']!r} in node {d.get('name')!r}; "
                                f"known kinds: {sorted(OPS)}")
    attrs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.get("attrs", {}).items()}
    return cls(name=d["name"], inputs=tuple(d["inputs"]), output=d["output"], **attrs)


def _freeze(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Graph:
    """Inputs, nodes in topological order, outputs, and parameter arrays (read-only)."""

    inputs: tuple[tuple[str, TensorSpec], ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    params: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple((n, s) for n, s in self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "params", {k: _freeze(np.asarray(v)) for k, v in self.params.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.inputs == other.inputs and self.nodes == other.nodes and self.outputs == other.outputs
                and self.params.keys() == other.params.keys()
                and all(self.params[k].dtype == other.params[k].dtype
                        and np.array_equal(self.params[k], other.params[k]) for k in self.params))

    __hash__ = None  # type: ignore[assignment]

    def with_nodes(self, nodes, params: Mapping[str, np.ndarray] | None = None) -> "Graph":
        """The same inputs and outputs with these nodes, keeping only the parameters they read."""
        nodes = tuple(nodes)
        used = {i for n in nodes for i in n.inputs}
        params = self.params if params is None else params
        return Graph(self.inputs, nodes, self.outputs, {k: v for k, v in params.items() if k in used})

    def producers(self) -> dict[str, Node]:
        return {n.output: n for n in self.nodes}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def infer_specs(self) -> dict[str, TensorSpec]:
        """Spec of every value (inputs, params, node outputs); collects all problems, raises once."""
        specs: dict[str, TensorSpec] = {}
        problems: list[str] = []
        for name, spec in self.inputs:
            if name in specs:
                problems.append(f"graph input {name!r} is declared twice")
            specs[name] = spec
        for name, arr in self.params.items():
            if name in specs:
                problems.append(f"{name!r} is both a graph input and a parameter")
            specs[name] = TensorSpec(arr.shape, str(arr.dtype))
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in specs]
            if missing:
                problems.append(f"{node.op} {node.name!r} reads {missing}, which no earlier node, "
                                "input or parameter defines (nodes must be in topological order)")
                continue
            if node.output in specs:
                problems.append(f"{node.op} {node.name!r} writes {node.output!r}, which is already defined")
                continue
            try:
                specs[node.output] = node.infer([specs[i] for i in node.inputs])
            except IRValidationError as e:
                problems.append(str(e))
        for o in self.outputs:
            if o not in specs:
                problems.append(f"graph output {o!r} is never produced")
        names = [n.name for n in self.nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"node names {dup} are used more than once")
        if problems:
            raise IRValidationError("invalid graph:\n  " + "\n  ".join(problems))
        return specs

    def validate(self) -> "Graph":
        self.infer_specs()
        return self

    def to_json(self) -> dict:
        """Structure and parameter specs as JSON-ready data (parameter values travel separately)."""
        return {
            "inputs": [{"name": n, **s.to_json()} for n, s in self.inputs],
            "nodes": [n.to_json() for n in self.nodes],
            "outputs": list(self.outputs),
            "params": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.params.items()},
        }

    @staticmethod
    def from_json(d: Mapping, params: Mapping[str, np.ndarray]) -> "Graph":
        declared = d.get("params", {})
        if set(declared) != set(params):
            raise IRValidationError(f"parameters {sorted(set(declared) ^ set(params))} are declared but "
                                    "missing, or present but undeclared")
        for k, spec in declared.items():
            if list(params[k].shape) != list(spec["shape"]) or str(params[k].dtype) != spec["dtype"]:
                raise IRValidationError(f"parameter {k!r} is {params[k].shape} {params[k].dtype}, "
                                        f"declared {spec['shape']} {spec['dtype']}")
        g = Graph(inputs=tuple((i["name"], TensorSpec.from_json(i)) for i in d["inputs"]),
                  nodes=tuple(node_from_json(n) for n in d["nodes"]),
                  outputs=tuple(d["outputs"]), params=params)
        return g.validate()
