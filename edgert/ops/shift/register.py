"""Bind the shift nodes to the runtime (Numba kernels), the NumPy reference and the profiler."""

from __future__ import annotations

import math

import numpy as np

from edgert import ir
from edgert.ops.reference import EXTRA_RULES
from edgert.ops.shift import codes, int8dot, kernels
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear
from edgert.runtime.kernels import register_kernel
from edgert.runtime.profile import COUNTERS


def multipliers(node, packed: np.ndarray) -> np.ndarray:
    """Decoded integer multipliers ±2^e (0 for the zero code), shaped like the weights."""
    count = math.prod(node.weight_shape)
    return codes.decode(codes.unpack(packed, node.bits, count), node.bits, node.zero).reshape(node.weight_shape)


def _decoded(node, packed: np.ndarray, state: dict, layout):
    """Decode once per parameter array (the state keeps the array it decoded, so set_params re-decodes):
    (the Numba paths' layout, the int8 dot-product weights or None)."""
    cached = state.get("weights")
    if cached is None or cached[0] is not packed:
        m = multipliers(node, packed)
        cached = state["weights"] = (packed, layout(m), _int8_weights(node, m, state))
    return cached[1], cached[2]


def _int8_weights(node, m: np.ndarray, state: dict):
    """The int8 dot-product path (ops/shift/int8dot.py) for an int_mac layer when this CPU has one and the
    layer fits it exactly (int8 activations, |m| <= 64, no groups), picked when the weights are decoded,
    i.e. at load. ``state["int8_variant"]``, set before the first run, overrides the CPU's best variant
    (None: the Numba paths)."""
    variant = state.setdefault("int8_variant", int8dot.host_variant())
    if variant is None or node.path != "int_mac" or getattr(node, "groups", 1) != 1:
        return None
    if not int8dot.eligible(m, node.act_bits):
        return None
    return int8dot.conv_weights(m, variant) if m.ndim == 4 else int8dot.Int8Weights(m, variant)


def _acc(node, k: int, shape) -> np.ndarray:
    return np.zeros(shape, kernels.acc_dtype(k, node.act_bits, node.bits, node.zero))


@register_kernel("shift_conv2d")
def run_shift_conv2d(node: ShiftConv2d, args, state) -> np.ndarray:
    x, packed = args[0], args[1]
    bias = args[2] if len(args) == 3 else None
    (mt, exps, negs, keeps), w8 = _decoded(node, packed, state, lambda m: kernels.conv_layout(m, node.groups))
    o, cg, kh, kw = node.weight_shape
    t, l, b, r = node.padding
    oh = (x.shape[2] + t + b - node.dilation[0] * (kh - 1) - 1) // node.stride[0] + 1
    ow = (x.shape[3] + l + r - node.dilation[1] * (kw - 1) - 1) // node.stride[1] + 1
    if w8 is not None:
        acc = int8dot.conv2d(x, w8, node.act_bits, node.frac_bits, (kh, kw), node.stride, node.padding,
                             node.dilation, (oh, ow))
        return kernels.to_float(acc, node.scale_exp, node.frac_bits, bias, 1)
    xp = kernels._pad(kernels.quantize(x, node.act_bits, node.frac_bits), node.padding)
    acc = _acc(node, cg * kh * kw, (x.shape[0], o, oh, ow))
    if node.path == "shift_add":
        kernels.shift_conv2d_shift_add(xp, exps, negs, keeps, node.stride, node.dilation, acc)
    else:
        kernels.shift_conv2d_int_mac(xp, mt, node.stride, node.dilation, acc)
    return kernels.to_float(acc, node.scale_exp, node.frac_bits, bias, 1)


@register_kernel("shift_linear")
def run_shift_linear(node: ShiftLinear, args, state) -> np.ndarray:
    x, packed = args[0], args[1]
    bias = args[2] if len(args) == 3 else None
    (m, exps, negs), w8 = _decoded(node, packed, state, lambda m: (m, *kernels.split_multipliers(m)))
    xq = kernels.quantize(x, node.act_bits, node.frac_bits)
    rows = xq.reshape(-1, xq.shape[-1])
    acc = _acc(node, node.weight_shape[1], (rows.shape[0], node.weight_shape[0]))
    if w8 is not None:
        acc = int8dot.linear(rows, w8)
    elif node.path == "shift_add":
        kernels.shift_linear_shift_add(np.ascontiguousarray(rows), exps, negs, acc)
    else:
        kernels.shift_linear_int_mac(np.ascontiguousarray(rows), m, acc)
    y = kernels.to_float(acc, node.scale_exp, node.frac_bits, bias, 1)
    return y.reshape(x.shape[:-1] + (node.weight_shape[0],))


def _ref_conv(node: ShiftConv2d, args, spec: ir.TensorSpec, state) -> np.ndarray:
    xq = kernels.quantize(args[0], node.act_bits, node.frac_bits)
    acc = kernels.shift_conv2d_ref(xq, multipliers(node, args[1]), node.stride, node.padding, node.dilation,
                                   node.groups, spec.shape[2:4])
    return kernels.to_float(acc, node.scale_exp, node.frac_bits, args[2] if len(args) == 3 else None, 1)


def _ref_linear(node: ShiftLinear, args, spec: ir.TensorSpec, state) -> np.ndarray:
    xq = kernels.quantize(args[0], node.act_bits, node.frac_bits)
    acc = kernels.shift_linear_ref(xq, multipliers(node, args[1]))
    return kernels.to_float(acc, node.scale_exp, node.frac_bits, args[2] if len(args) == 3 else None,
                            acc.ndim - 1)


EXTRA_RULES["shift_conv2d"] = _ref_conv
EXTRA_RULES["shift_linear"] = _ref_linear


def _count(node, ins, out: ir.TensorSpec, batch: int) -> dict[str, int]:
    """One shift-add per weight per output position (zero codes included: the count is static)."""
    n_out = out.numel(batch)
    k = math.prod(node.weight_shape[1:])
    bias = n_out if len(ins) == 3 else 0
    # quantizing the input and scaling the output are elementwise
    return {"shift_add": n_out * k, "elementwise": ins[0].numel(batch) + n_out + bias}


COUNTERS["shift_conv2d"] = _count
COUNTERS["shift_linear"] = _count
