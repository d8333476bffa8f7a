"""Training-side layers (torch only; the device runtime never imports this package)."""

from edgert.nn.binary import (BinaryActivation, BinaryConv2d, BinaryLinear, binary_conv2d, binary_linear,
                              ste_sign)
from edgert.nn.shift import ShiftConv2d, ShiftLinear, shift_conv2d, shift_linear

__all__ = ["BinaryActivation", "BinaryConv2d", "BinaryLinear", "binary_conv2d", "binary_linear", "ste_sign",
           "ShiftConv2d", "ShiftLinear", "shift_conv2d", "shift_linear"]
