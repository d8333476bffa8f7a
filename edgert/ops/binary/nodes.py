"""IR nodes of the binary family: sign + bit-pack, XNOR-popcount conv and dense, max-pool on packed bits.

Packed activations follow Larq Compute Engine's convention with 64-bit words: channels are the
innermost axis (layout N, H, W, words), bit = 1 means the value is -1 (sign(0) = +1), and a partial last
word is padded with 0 bits (+1). With ``groups`` > 1 each group's channels start a fresh word, so a
grouped conv reads whole words: ``words = groups * ceil(channels / groups / 64)``; except that groups of
one channel (a depthwise conv's input) pack densely, 64 to a word, as one group (``bits.pack_groups``).

Binary weights use the same convention, one row per output channel over the reduction in the order
(kh, kw, words): ``weight[O, kh, kw, words_per_group]`` (conv) or ``weight[O, words]`` (dense). The dot
product of K = kh * kw * C/groups signs is ``K - 2 * popcount(x XOR w)`` summed over the words.

Output is either ``"float"``, ``y = float32(dot) * scale[o] + bias[o]`` in NCHW, or ``"bits"``, packed
signs for the next binary layer: ``bit = (dot < threshold[o]) XOR flip[o]`` (threshold int32, flip uint8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from edgert import ir
from edgert.ir import TensorSpec, _pair, _quad, _window_out
from edgert.ops.binary.bits import pack_groups

OUTPUTS = ("float", "bits")
PAD_MODES = ("one", "zero")


def words(channels: int, groups: int = 1) -> int:
    """64-bit words holding ``channels`` packed signs split into ``groups`` word-aligned groups (groups of one
    channel pack densely: bits.pack_groups)."""
    groups = pack_groups(channels, groups)
    return groups * -(-(channels // groups) // 64)


class _Binary(ir.Node):
    family: ClassVar[str] = "binary"
    backends: ClassVar[tuple[str, ...]] = ("numba",)


def _need(node: ir.Node, spec: TensorSpec, shape: tuple, dtype: str, what: str) -> None:
    if spec.dtype != dtype or len(spec.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(spec.shape, shape)):
        node._fail(f"{what} must be {dtype} of shape {shape} (None: any), got {spec.dtype} {spec.shape}")


def _epilogue(node: ir.Node, ins: Sequence[TensorSpec], o: int) -> None:
    if node.output_kind == "float":
        _need(node, ins[2], (o,), "float32", "scale")
        _need(node, ins[3], (o,), "float32", "bias")
    else:
        _need(node, ins[2], (o,), "int32", "threshold")
        _need(node, ins[3], (o,), "uint8", "flip")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BitPack(_Binary):
    """Packed signs of a float tensor: NCHW -> uint64 [N, H, W, words], or [N, K] -> [N, words]."""

    op: ClassVar[str] = "bitpack"
    channels: int
    groups: int = 1

    def check(self) -> None:
        if self.channels < 1 or self.groups < 1 or self.channels % self.groups:
            self._fail(f"channels={self.channels} must be >= 1 and divisible by groups={self.groups}")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.dtype != "float32" or x.rank not in (2, 4) or x.shape[1] != self.channels:
            self._fail(f"input must be float32 [N, {self.channels}] or [N, {self.channels}, H, W], got "
                       f"{x.dtype} {x.shape}")
        w = words(self.channels, self.groups)
        return TensorSpec((x.shape[0], w) if x.rank == 2 else (x.shape[0], x.shape[2], x.shape[3], w), "uint64")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryConv2d(_Binary):
    """XNOR-popcount conv; inputs (x bits [N, H, W, words], weight bits [O, kh, kw, wpg], p0, p1[, MST]).

    (p0, p1) is (scale, bias) for ``output_kind="float"`` and (threshold, flip) for ``"bits"``; padding
    is (top, left, bottom, right) filled with +1 (``pad_mode="one"``) or with 0 (``"zero"``). Four more
    int32 inputs (order, parent, diff_ptr, diff_idx; groups == 1) give an MST schedule (ops/binary/mst.py):
    the same result, computed with channel reuse.
    """

    op: ClassVar[str] = "binary_conv2d"
    n_inputs: ClassVar[tuple[int, ...]] = (4, 8)
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    pad_mode: str = "one"
    groups: int = 1
    output_kind: str = "float"
    out_groups: int = 1  # word grouping of packed output (the consumer's groups)

    def check(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _quad(self.padding, "padding"))
        if self.pad_mode not in PAD_MODES:
            self._fail(f"pad_mode={self.pad_mode!r}; valid values are {PAD_MODES}")
        if self.output_kind not in OUTPUTS:
            self._fail(f"output_kind={self.output_kind!r}; valid values are {OUTPUTS}")
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            self._fail(f"kernel {self.kernel} and stride {self.stride} must be >= 1, padding {self.padding} >= 0")
        if (self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups
                or self.out_groups < 1 or self.out_channels % self.out_groups):
            self._fail(f"in_channels={self.in_channels}, out_channels={self.out_channels} must be divisible by "
                       f"groups={self.groups}, and out_channels by out_groups={self.out_groups}")

    @property
    def reduction(self) -> int:
        """K: signs per output value."""
        return self.kernel[0] * self.kernel[1] * (self.in_channels // self.groups)

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x, w = ins[0], ins[1]
        _need(self, x, (None, None, None, words(self.in_channels, self.groups)), "uint64", "input")
        o, (kh, kw) = self.out_channels, self.kernel
        _need(self, w, (o, kh, kw, words(self.in_channels // self.groups)), "uint64", "weight")
        _epilogue(self, ins, o)
        if len(ins) == 8:
            if self.groups != 1:
                self._fail(f"an MST schedule needs groups == 1, got groups={self.groups}")
            for spec, n, what in zip(ins[4:], (o, o, o + 1, None), ("order", "parent", "diff_ptr", "diff_idx")):
                _need(self, spec, (n,), "int32", f"MST {what}")
        t, l, b, r = self.padding
        oh = _window_out(x.shape[1], kh, self.stride[0], t, b, 1, False)
        ow = _window_out(x.shape[2], kw, self.stride[1], l, r, 1, False)
        if self.output_kind == "float":
            return TensorSpec((x.shape[0], o, oh, ow), "float32")
        return TensorSpec((x.shape[0], oh, ow, words(o, self.out_groups)), "uint64")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryDense(_Binary):
    """XNOR-popcount dense layer; inputs (x bits [N, words], weight bits [O, words], p0, p1) as in BinaryConv2d."""

    op: ClassVar[str] = "binary_dense"
    n_inputs: ClassVar[tuple[int, ...]] = (4,)
    in_features: int
    out_features: int
    output_kind: str = "float"

    def check(self) -> None:
        if self.output_kind not in OUTPUTS:
            self._fail(f"output_kind={self.output_kind!r}; valid values are {OUTPUTS}")
        if self.in_features < 1 or self.out_features < 1:
            self._fail(f"in_features={self.in_features} and out_features={self.out_features} must be >= 1")

    @property
    def reduction(self) -> int:
        return self.in_features

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        kw = words(self.in_features)
        _need(self, ins[0], (None, kw), "uint64", "input")
        _need(self, ins[1], (self.out_features, kw), "uint64", "weight")
        _epilogue(self, ins, self.out_features)
        if self.output_kind == "float":
            return TensorSpec((ins[0].shape[0], self.out_features), "float32")
        return TensorSpec((ins[0].shape[0], words(self.out_features)), "uint64")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryMaxPool2d(_Binary):
    """Max-pool on packed signs: a -1 bit survives only if every in-bounds bit in the window is -1 (AND)."""

    op: ClassVar[str] = "binary_max_pool2d"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    def check(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _quad(self.padding, "padding"))
        if min(self.kernel) < 1 or min(self.stride) < 1:
            self._fail(f"kernel {self.kernel} and stride {self.stride} must be >= 1")
        if any(p < 0 or p * 2 > k for p, k in zip(self.padding, self.kernel * 2)):
            self._fail(f"padding {self.padding} must be between 0 and half the kernel {self.kernel}")

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.dtype != "uint64" or x.rank != 4:
            self._fail(f"input must be packed bits uint64 [N, H, W, words], got {x.dtype} {x.shape}")
        t, l, b, r = self.padding
        oh = _window_out(x.shape[1], self.kernel[0], self.stride[0], t, b, 1, False)
        ow = _window_out(x.shape[2], self.kernel[1], self.stride[1], l, r, 1, False)
        return TensorSpec((x.shape[0], oh, ow, x.shape[3]), "uint64")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BinarySign(_Binary):
    """y = +1 where x >= 0, else -1 (float32, unpacked): a binary activation feeding a float layer."""

    op: ClassVar[str] = "binary_sign"

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        if ins[0].dtype != "float32":
            self._fail(f"input must be float32, got {ins[0].dtype}")
        return ins[0]


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class BitFlatten(_Binary):
    """Packed [N, H, W, words] -> [N, H * W * words]: flatten in (h, w, channel) order, no data change.

    Only exact when every pixel's words are full (channels a multiple of 64), so the flat words hold
    H * W * C signs with no padding between pixels.
    """

    op: ClassVar[str] = "bit_flatten"

    def infer(self, ins: Sequence[TensorSpec]) -> TensorSpec:
        x = ins[0]
        if x.dtype != "uint64" or x.rank != 4:
            self._fail(f"input must be packed bits uint64 [N, H, W, words], got {x.dtype} {x.shape}")
        return TensorSpec((x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]), "uint64")
