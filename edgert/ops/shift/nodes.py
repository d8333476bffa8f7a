"""IR nodes for shift layers: packed sign/exponent codes, fixed-point input, exact integer sums."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from edgert import ir
from edgert.ops.shift.codes import BITS, packed_size

PATHS = ("shift_add", "int_mac")  # how the kernel forms products: shifts, or decoded integer multiplies


@dataclass(frozen=True, slots=True, kw_only=True)
class _ShiftBase(ir.Node):
    family: ClassVar[str] = "shift"
    backends: ClassVar[tuple[str, ...]] = ("numba",)
    n_inputs: ClassVar[tuple[int, ...]] = (2, 3)  # x, packed codes (uint8), bias (float32)?
    bits: int = 3
    zero: bool = False
    scale_exp: int = 0   # weights are ±2^(e + scale_exp)
    act_bits: int = 8    # activations: clamp(round_half_even(x * 2^frac_bits)) in act_bits signed bits
    frac_bits: int = 0
    path: str = "int_mac"

    def check(self) -> None:
        if self.bits not in BITS:
            self._fail(f"bits={self.bits}; shift weights take {BITS} bits")
        if not 2 <= self.act_bits <= 16:
            self._fail(f"act_bits={self.act_bits}; give 2..16")
        if self.path not in PATHS:
            self._fail(f"path={self.path!r}; choose one of {PATHS}")

    def _check_codes(self, ins: Sequence[ir.TensorSpec], count: int, out_ch: int) -> None:
        want = packed_size(count, self.bits)
        if ins[1].shape != (want,) or ins[1].dtype != "uint8":
            self._fail(f"codes must be uint8[{want}] ({count} weights x {self.bits} bits), got "
                       f"{ins[1].dtype}{list(ins[1].shape)}")
        if len(ins) == 3 and ins[2].shape != (out_ch,):
            self._fail(f"bias must have shape ({out_ch},), got {ins[2].shape}")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftConv2d(_ShiftBase):
    """y = 2^(scale_exp - frac_bits) * conv(x_q, ±2^e) + b, integer accumulation."""

    op: ClassVar[str] = "shift_conv2d"
    weight_shape: tuple[int, int, int, int] = (1, 1, 1, 1)  # O, C/groups, kh, kw
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def check(self) -> None:
        _ShiftBase.check(self)
        conv = ir.Conv2d(name=self.name, inputs=("x", "w"), output="y", stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups)
        for f in ("stride", "padding", "dilation"):
            object.__setattr__(self, f, getattr(conv, f))
        object.__setattr__(self, "weight_shape", tuple(int(d) for d in self.weight_shape))

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        self._check_codes(ins, math.prod(self.weight_shape), self.weight_shape[0])
        conv = ir.Conv2d(name=self.name, inputs=("x", "w"), output="y", stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups)
        return conv.infer([ins[0], ir.TensorSpec(self.weight_shape)])


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class ShiftLinear(_ShiftBase):
    """y = 2^(scale_exp - frac_bits) * (x_q @ (±2^e).T) + b, integer accumulation."""

    op: ClassVar[str] = "shift_linear"
    weight_shape: tuple[int, int] = (1, 1)  # out_features, in_features

    def check(self) -> None:
        _ShiftBase.check(self)
        object.__setattr__(self, "weight_shape", tuple(int(d) for d in self.weight_shape))

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        self._check_codes(ins, math.prod(self.weight_shape), self.weight_shape[0])
        lin = ir.Linear(name=self.name, inputs=("x", "w"), output="y")
        return lin.infer([ins[0], ir.TensorSpec(self.weight_shape)])
