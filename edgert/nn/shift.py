"""Shift layers: weights sign * 2^p (DenseShift, zero-free by default), fixed-point activations.

.. math::  y = 2^{s - f} \\cdot \\big(\\mathrm{conv}(x_q, m)\\big) + b, \\quad
           x_q = \\mathrm{clamp}(\\mathrm{round}(x \\cdot 2^f), -2^{A-1}, 2^{A-1} - 1), \\quad
           m = \\pm 2^e

``s`` is the layer's power-of-two weight scale, ``e`` in [0, 2^(bits-1)) the per-weight exponent,
``f`` the activations' fraction bits and ``A`` their width. ``round`` is round-half-to-even (torch.round
and numpy.rint agree). The convolution of integers is exact, so the only roundings are the int -> float32
conversion of the accumulator and the bias add — the runtime's integer kernels do the same two.

Training uses the sign-scale decomposition (DenseShift, DeepShift-PS): a latent sign and a latent
log2-magnitude per weight, each through a straight-through estimator. ``zero=True`` lets the sign be
0 (DeepShift), which costs one exponent code. In eval mode the forward is one ``torch.library``
custom op (``edgert::shift_conv2d`` / ``edgert::shift_linear``) so ``torch.export`` keeps it whole.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgert.ops.shift.codes import BITS, n_exponents


def quantize_activation(x: Tensor, act_bits: int, frac_bits: int) -> Tensor:
    """Integer-valued fixed-point codes of ``x`` (same dtype): clamp(round(x * 2^f))."""
    lim = 2 ** (act_bits - 1)
    return torch.clamp(torch.round(x * 2.0 ** frac_bits), -lim, lim - 1)


def _int_result(acc: Tensor, scale_exp: int, frac_bits: int, bias: Optional[Tensor]) -> Tensor:
    """float32(acc) * 2^(s - f) (+ bias): the one place integer results become float."""
    y = acc.to(torch.float32) * (2.0 ** (scale_exp - frac_bits))
    return y if bias is None else y + bias.to(torch.float32)


@torch.library.custom_op("edgert::shift_conv2d", mutates_args=())
def shift_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                 dilation: list[int], groups: int, bits: int, zero: bool, scale_exp: int, act_bits: int,
                 frac_bits: int) -> Tensor:
    """Integer-semantics shift conv; ``weight`` holds exact ±2^(e + scale_exp) (or 0) values.

    ``bits`` and ``zero`` do not change the arithmetic; they tell the compiler how to store the codes.

    The sums run in float64 on integer values, exact far beyond any layer edgert supports.
    """
    xq = quantize_activation(x.to(torch.float64), act_bits, frac_bits)
    m = weight.to(torch.float64) * 2.0 ** -scale_exp
    acc = F.conv2d(xq, m, None, stride, padding, dilation, groups)
    return _int_result(acc, scale_exp, frac_bits, None if bias is None else bias.view(1, -1, 1, 1))


@shift_conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, bits, zero, scale_exp, act_bits, frac_bits):
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


@torch.library.custom_op("edgert::shift_linear", mutates_args=())
def shift_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], bits: int, zero: bool, scale_exp: int,
                 act_bits: int, frac_bits: int) -> Tensor:
    """Integer-semantics shift linear layer (see shift_conv2d)."""
    xq = quantize_activation(x.to(torch.float64), act_bits, frac_bits)
    acc = F.linear(xq, weight.to(torch.float64) * 2.0 ** -scale_exp)
    return _int_result(acc, scale_exp, frac_bits, bias)


@shift_linear.register_fake
def _(x, weight, bias, bits, zero, scale_exp, act_bits, frac_bits):
    return F.linear(x, weight)


class _ShiftWeight(nn.Module):
    """Latent sign and log2-magnitude per weight; ``weight()`` gives the quantized ±2^p (or 0)."""

    def __init__(self, shape: tuple[int, ...], fan_in: int, bits: int, zero: bool, act_bits: int):
        super().__init__()
        if bits not in BITS:
            raise ValueError(f"bits={bits}: shift layers support {BITS} bits per weight")
        if not 2 <= act_bits <= 16:
            raise ValueError(f"act_bits={act_bits}: give 2..16 bits for the fixed-point activations")
        self.bits, self.zero, self.act_bits = bits, zero, act_bits
        w = torch.empty(shape)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        # latent sign in [-1, 1]; with zero=True the smallest third of the weights start at 0
        self.sign = nn.Parameter(w / w.abs().max() * (1.5 if zero else 1.0))
        n_exp = n_exponents(bits, zero)
        # the largest weight gets the top exponent; the scale is a fixed power of two per layer
        self.scale_exp = int(math.floor(math.log2(w.abs().max().item()))) - (n_exp - 1)
        self.log2_mag = nn.Parameter(torch.log2(w.abs().clamp_min(2.0 ** self.scale_exp)))
        self.frac_bits = act_bits - 1  # fixed-point position; recalibrated from data in training
        self.register_buffer("act_absmax", torch.tensor(1.0))

    def weight(self) -> Tensor:
        n_exp = n_exponents(self.bits, self.zero)
        p = self.log2_mag.clamp(self.scale_exp, self.scale_exp + n_exp - 1)
        p = p + (torch.round(p) - p).detach()
        if self.zero:
            s = self.sign.clamp(-1, 1)
            s = s + (torch.round(s) - s).detach()
        else:
            s = self.sign.clamp(-1, 1)
            s = s + (torch.where(self.sign >= 0, 1.0, -1.0) - s).detach()
        return s * torch.exp2(p)

    def quantize_input(self, x: Tensor) -> Tensor:
        """Training: track the input range, pick fraction bits, fake-quantize with an STE."""
        if self.training:
            with torch.no_grad():
                self.act_absmax.mul_(0.9).add_(0.1 * x.detach().abs().max())
                top = 2 ** (self.act_bits - 1) - 1
                self.frac_bits = int(math.floor(math.log2(top / max(self.act_absmax.item(), 1e-8))))
        q = quantize_activation(x, self.act_bits, self.frac_bits) * 2.0 ** -self.frac_bits
        return x + (q - x).detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        top = 2 ** (self.act_bits - 1) - 1
        self.frac_bits = int(math.floor(math.log2(top / max(self.act_absmax.item(), 1e-8))))


class ShiftConv2d(nn.Module):
    """Conv2d whose weights are sign * 2^p with ``bits`` bits each; activations in fixed point."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 bits: int = 3, zero: bool = False, act_bits: int = 8):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.stride, self.padding, self.dilation, self.groups = ([stride] * 2, [padding] * 2, [dilation] * 2,
                                                                 groups)
        fan_in = in_channels // groups * kh * kw
        self.q = _ShiftWeight((out_channels, in_channels // groups, kh, kw), fan_in, bits, zero, act_bits)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return F.conv2d(self.q.quantize_input(x), self.q.weight(), self.bias, self.stride, self.padding,
                            self.dilation, self.groups)
        return shift_conv2d(x, self.q.weight(), self.bias, self.stride, self.padding, self.dilation,
                            self.groups, self.q.bits, self.q.zero, self.q.scale_exp, self.q.act_bits,
                            self.q.frac_bits)


class ShiftLinear(nn.Module):
    """Linear layer whose weights are sign * 2^p with ``bits`` bits each; activations in fixed point."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 3,
                 zero: bool = False, act_bits: int = 8):
        super().__init__()
        self.q = _ShiftWeight((out_features, in_features), in_features, bits, zero, act_bits)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return F.linear(self.q.quantize_input(x), self.q.weight(), self.bias)
        return shift_linear(x, self.q.weight(), self.bias, self.q.bits, self.q.zero, self.q.scale_exp,
                            self.q.act_bits, self.q.frac_bits)
