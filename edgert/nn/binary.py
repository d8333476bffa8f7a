"""Binary layers: sign of weights and inputs with a straight-through estimator (STE).

.. math::  y = \\mathrm{conv}(\\mathrm{pad}_v(\\mathrm{sign}(x)), \\mathrm{sign}(W)) \\cdot s_c + b_c

``sign(0) = +1``. The STE passes the gradient where ``|x| <= 1`` (Courbariaux et al. 2016, larq's
``ste_sign``). Padding is an explicit choice: ``"one"`` pads the binarized input with +1 (LCE's native
padding, cheap on packed bits) or ``"zero"`` pads with 0 (exact zero padding, a per-position correction).

Each layer's forward is one ``torch.library`` custom op (``edgert::binary_conv2d``,
``edgert::binary_linear``, ``edgert::sign``), so ``torch.export`` keeps it as one node with every
attribute explicit, and the edgert frontend maps it onto the binary IR without guessing patterns.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD_VALUES = {"one": 1.0, "zero": 0.0}


def _sign(x: Tensor) -> Tensor:
    """+1 where x >= 0, else -1 (same dtype)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def _ste(x: Tensor) -> Tensor:
    """sign(x) in the forward pass, gradient 1 where |x| <= 1 in the backward pass."""
    clipped = x.clamp(-1.0, 1.0)
    return clipped + (_sign(x) - clipped).detach()


def _conv_math(x, weight, scale, bias, stride, padding, pad_value, groups, binarize):
    xb, wb = binarize(x), binarize(weight)
    t, l, b, r = padding
    if any(padding):
        xb = F.pad(xb, (l, r, t, b), value=pad_value)
    y = F.conv2d(xb, wb, None, stride, 0, 1, groups)
    if scale is not None:
        y = y * scale.view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def _linear_math(x, weight, scale, bias, binarize):
    y = F.linear(binarize(x), binarize(weight))
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y


@torch.library.custom_op("edgert::binary_conv2d", mutates_args=())
def binary_conv2d(x: Tensor, weight: Tensor, scale: Optional[Tensor], bias: Optional[Tensor],
                  stride: list[int], padding: list[int], pad_value: float, groups: int) -> Tensor:
    """conv(pad(sign(x), pad_value), sign(weight)) * scale + bias; padding is (top, left, bottom, right)."""
    return _conv_math(x, weight, scale, bias, stride, padding, pad_value, groups, _sign)


@binary_conv2d.register_fake
def _(x, weight, scale, bias, stride, padding, pad_value, groups):
    return _conv_math(x, weight, scale, bias, stride, padding, pad_value, groups, lambda t: t)


@torch.library.custom_op("edgert::binary_linear", mutates_args=())
def binary_linear(x: Tensor, weight: Tensor, scale: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """sign(x) @ sign(weight).T * scale + bias."""
    return _linear_math(x, weight, scale, bias, _sign)


@binary_linear.register_fake
def _(x, weight, scale, bias):
    return _linear_math(x, weight, scale, bias, lambda t: t)


@torch.library.custom_op("edgert::sign", mutates_args=())
def ste_sign(x: Tensor) -> Tensor:
    """+1 where x >= 0, else -1; the gradient is the straight-through estimator 1[|x| <= 1]."""
    return _sign(x)


@ste_sign.register_fake
def _(x):
    return torch.empty_like(x)


def _backward_by_replay(math_fn, n_tensors: int):
    """Autograd for a custom op: re-run its math with STE binarization and differentiate that."""
    def setup(ctx, inputs, output):
        ctx.save_for_backward(*[t if isinstance(t, Tensor) else None for t in inputs[:n_tensors]])
        ctx.rest = inputs[n_tensors:]

    def backward(ctx, grad):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) if t is not None else None for t in saved]
            y = math_fn(*leaves, *ctx.rest)
            wrt = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad(y, wrt, grad, allow_unused=True))
        return tuple(next(grads) if t is not None else None for t in leaves) + (None,) * len(ctx.rest)
    return setup, backward


_s, _b = _backward_by_replay(lambda x, w, s, b, *rest: _conv_math(x, w, s, b, *rest, _ste), 4)
binary_conv2d.register_autograd(_b, setup_context=_s)
_s, _b = _backward_by_replay(lambda x, w, s, b: _linear_math(x, w, s, b, _ste), 4)
binary_linear.register_autograd(_b, setup_context=_s)
_s, _b = _backward_by_replay(_ste, 1)
ste_sign.register_autograd(_b, setup_context=_s)


def _padding(padding, kernel: tuple[int, int]) -> list[int]:
    if padding == "same":
        th, tw = kernel[0] - 1, kernel[1] - 1
        return [th // 2, tw // 2, th - th // 2, tw - tw // 2]
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return [p[0], p[1], p[0], p[1]] if len(p) == 2 else list(p)


class BinaryConv2d(nn.Module):
    """2-D convolution of sign(x) with sign(W), optional per-output-channel scale and bias.

    ``pad_mode`` is ``"one"`` (pad the binarized input with +1, LCE's native padding) or ``"zero"``.
    The latent float weights are trained; only their signs are used.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple | str = 0, groups: int = 1,
                 pad_mode: str = "one", scale: bool = False, bias: bool = False) -> None:
        super().__init__()
        if pad_mode not in PAD_VALUES:
            raise ValueError(f"pad_mode={pad_mode!r}; valid values are 'one' (pad with +1) and 'zero'")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be divisible "
                             f"by groups={groups}")
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size, self.groups = in_channels, out_channels, k, groups
        self.stride = [stride, stride] if isinstance(stride, int) else list(stride)
        self.padding, self.pad_mode = _padding(padding, k), pad_mode
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *k))
        nn.init.uniform_(self.weight, -1.0, 1.0)
        self.scale = nn.Parameter(torch.ones(out_channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return binary_conv2d(x, self.weight, self.scale, self.bias, self.stride, self.padding,
                             PAD_VALUES[self.pad_mode], self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, pad_mode={self.pad_mode!r}, groups={self.groups}, "
                f"scale={self.scale is not None}, bias={self.bias is not None}")


class BinaryLinear(nn.Module):
    """sign(x) @ sign(W).T, optional per-output scale and bias."""

    def __init__(self, in_features: int, out_features: int, scale: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.uniform_(self.weight, -1.0, 1.0)
        self.scale = nn.Parameter(torch.ones(out_features)) if scale else None
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return binary_linear(x, self.weight, self.scale, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, scale={self.scale is not None}, "
                f"bias={self.bias is not None}")


class BinaryActivation(nn.Module):
    """sign(x) with the straight-through estimator; +1 at 0."""

    def forward(self, x: Tensor) -> Tensor:
        return ste_sign(x)
