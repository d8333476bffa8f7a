"""Hooks the binary family into the runtime (Numba kernels), the NumPy reference and the profiler."""

from __future__ import annotations

import math

import numpy as np

from edgert import ir
from edgert.ops.binary import bits, channels, conv, isa, padding, sliced
from edgert.ops.binary.nodes import BinaryConv2d, BinaryDense, BinaryMaxPool2d, BinarySign, BitFlatten, BitPack
from edgert.ops.reference import EXTRA_RULES
from edgert.runtime.kernels import register_kernel
from edgert.runtime.profile import COUNTERS


# ---- runtime kernels ----

@register_kernel(BitPack.op)
def _bitpack(node: BitPack, args, state):
    return bits.bitpack(args[0], node.groups)


@register_kernel(BinaryConv2d.op)
def _conv(node: BinaryConv2d, args, state):
    x, w, p0, p1 = args[:4]
    w_t = prepared = simd_w = None
    variant = isa.variant()
    small_groups = channels.takes(w.shape, node.in_channels, node.groups)
    # kernel layouts, once per weight array (set_params replaces it): SIMD, transposed, bit-sliced
    if len(args) == 4 and not small_groups and conv.simd_kind(w.shape, node.groups):
        if state.get("simd_weight") is not w or state["simd"].variant != variant:
            state["simd_weight"], state["simd"] = w, conv.simd_weights(w, node.groups)
        simd_w = state["simd"]
    elif len(args) == 4 and (node.groups == 1 or small_groups):
        if state.get("weight") is not w:
            layout = conv.transpose_weight if node.groups == 1 else channels.Prepared
            state["weight"], state["w_t"] = w, layout(w)
        w_t = state["w_t"]
        if node.output_kind == "bits" and node.groups == 1:  # per (weight, threshold, flip) arrays
            key = (w, p0, p1)
            if any(a is not b for a, b in zip(state.get("sliced_key", ()), key)) or "sliced_key" not in state:
                state["sliced_key"] = key
                state["sliced"] = sliced.prepare(w, node.in_channels, p0, p1, node.out_groups)
            prepared = state["sliced"]
    if state.get("pad_weight") is not w:  # the zero padding's correction, per input shape, once per weight array
        state["pad_weight"], state["pad"] = w, padding.Correction(w, node.in_channels // node.groups)
    return conv.binary_conv2d(np.ascontiguousarray(x), w, node.in_channels, node.stride, node.padding,
                              node.pad_mode, node.groups, node.output_kind, p0, p1, node.out_groups,
                              tuple(args[4:]) or None, w_t, prepared, simd_w, state["pad"])


@register_kernel(BinaryDense.op)
def _dense(node: BinaryDense, args, state):
    x, w, p0, p1 = args
    if state.get("weight") is not w or state.get("variant") != isa.variant():  # once per weight array
        state["weight"], state["variant"], state["simd"] = w, isa.variant(), conv.dense_weights(w)
    return conv.binary_dense(np.ascontiguousarray(x), w, node.in_features, node.output_kind, p0, p1, state["simd"])


@register_kernel(BinaryMaxPool2d.op)
def _pool(node: BinaryMaxPool2d, args, state):
    return conv.binary_max_pool(np.ascontiguousarray(args[0]), node.kernel, node.stride, node.padding)


@register_kernel(BinarySign.op)
def _sign(node: BinarySign, args, state):
    return bits.sign(args[0])


@register_kernel(BitFlatten.op)
def _bit_flatten(node: BitFlatten, args, state):
    return args[0].reshape(args[0].shape[0], -1)


# ---- NumPy reference rules ----

def _conv_ref(node: BinaryConv2d, args, spec, state):
    x, w, p0, p1 = args[:4]  # an MST schedule changes how, never what: the reference ignores it
    dot = conv.binary_conv_dot_ref(x, w, node.in_channels, node.stride, node.padding, node.pad_mode, node.groups)
    return conv.epilogue_ref(dot, node.output_kind, p0, p1, node.out_groups)


def _dense_ref(node: BinaryDense, args, spec, state):
    x, w, p0, p1 = args
    return conv.epilogue_ref(conv.binary_dense_dot_ref(x, w, node.in_features), node.output_kind, p0, p1)


EXTRA_RULES[BitPack.op] = lambda node, args, spec, state: bits.bitpack_ref(args[0], node.groups)
EXTRA_RULES[BinarySign.op] = lambda node, args, spec, state: bits.sign_ref(args[0])
EXTRA_RULES[BitFlatten.op] = lambda node, args, spec, state: args[0].reshape(args[0].shape[0], -1).copy()
EXTRA_RULES[BinaryConv2d.op] = _conv_ref
EXTRA_RULES[BinaryDense.op] = _dense_ref
EXTRA_RULES[BinaryMaxPool2d.op] = lambda node, args, spec, state: conv.binary_max_pool_ref(
    args[0], node.kernel, node.stride, node.padding)


# ---- profiler counts ----

def _out_values(node, out: ir.TensorSpec, batch: int) -> int:
    """Output values (channels x positions), whether the output is float or packed."""
    if node.output_kind == "float":
        return out.numel(batch)
    channels = node.out_channels if isinstance(node, BinaryConv2d) else node.out_features
    return out.numel(batch) // out.shape[-1] * channels


def _count_conv(node, ins, out, batch):
    n = _out_values(node, out, batch)
    return {"binary_mac": n * node.reduction, "elementwise": n}  # one multiply-add or compare per output


def _count_pack(node, ins, out, batch):
    return {"elementwise": ins[0].numel(batch)}


def _count_pool(node, ins, out, batch):
    return {"elementwise": out.numel(batch) * math.prod(node.kernel)}  # word ANDs


COUNTERS[BinaryConv2d.op] = _count_conv
COUNTERS[BinaryDense.op] = _count_conv
COUNTERS[BitPack.op] = _count_pack
COUNTERS[BinarySign.op] = _count_pack
COUNTERS[BitFlatten.op] = lambda node, ins, out, batch: {}  # a view
COUNTERS[BinaryMaxPool2d.op] = _count_pool
