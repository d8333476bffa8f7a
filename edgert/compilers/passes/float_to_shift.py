"""Turn float conv2d/linear layers whose weights are all ±2^p times one scale into shift layers.

An ONNX model carries a shift network as plain float weights: every weight is ±2^p times one scale
per tensor or per output channel (or 0). Stored as float it is no smaller than any float model; as
3-5 bit codes it is 6-10x smaller and runs on the integer kernels. The codes keep the weights
exactly; the activations become fixed point (act_bits signed bits, frac_bits fractional), which is the
only rounding the conversion adds. A scale that is not a power of two (or differs per channel) is
applied after the integer sum by a float ``mul`` node with one multiplier per output channel.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from edgert import ir
from edgert.ops.reference import run_graph_ref
from edgert.ops.shift import codes
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear

# Without a representative input there are no activation ranges: 16-bit activations with 8 fractional
# bits hold |x| < 128 to 1/256, which keeps typical normalized activations within a fraction of a
# percent. A calibration input gives 8-bit activations scaled to its range (and the int8 kernels).
DEFAULT_ACT_BITS, DEFAULT_FRAC_BITS = 16, 8
CALIBRATED_ACT_BITS = 8


def shift_form(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool] | None:
    """(integer multipliers ±2^e / 0 shaped like w, per-output-channel scale float64[O], bits, zero)
    with w == multipliers * scale[o], or None when the weights are not of that form in <= 5 bits.

    One scale for the whole tensor is tried first (it needs no per-channel exponent alignment), then
    one per output channel; the scale is the smallest nonzero magnitude, so exponents start at 0.
    """
    w = np.asarray(w, np.float64)
    flat = w.reshape(w.shape[0], -1)
    mag = np.abs(flat)
    if not np.isfinite(mag).all() or not (mag > 0).any():
        return None
    zero = bool((mag == 0).any())
    for base in (np.full(len(flat), mag[mag > 0].min()), _row_min_nonzero(mag)):
        ratio = mag / base[:, None]
        e = np.where(mag > 0, np.log2(np.where(mag > 0, ratio, 1.0)), 0.0)
        e_int = np.rint(e)
        exact = np.where(mag > 0, np.ldexp(base[:, None], e_int.astype(int)) == mag, True)
        if not exact.all():
            continue
        span = int(e_int.max()) + 1
        bits = next((b for b in codes.BITS if codes.n_exponents(b, zero) >= span), None)
        if bits is None:  # too wide for one scale; per-channel scales may each span less
            continue
        m = np.where(mag > 0, np.sign(flat) * np.ldexp(1.0, e_int.astype(int)), 0).astype(np.int32)
        return m.reshape(w.shape), base, bits, zero
    return None


def _row_min_nonzero(mag: np.ndarray) -> np.ndarray:
    """Each row's smallest nonzero magnitude (1 for an all-zero row, whose scale does not matter)."""
    low = np.where(mag > 0, mag, np.inf).min(axis=1)
    return np.where(np.isfinite(low), low, 1.0)


def activation_format(amax: float, act_bits: int = CALIBRATED_ACT_BITS) -> tuple[int, int]:
    """(act_bits, frac_bits) putting the largest magnitude ``amax`` just inside the signed range; the
    16-bit default when the calibration showed the layer only zeros (e.g. the CLI's zero example)."""
    if not amax > 0:
        return DEFAULT_ACT_BITS, DEFAULT_FRAC_BITS
    return act_bits, int(math.floor(math.log2((2 ** (act_bits - 1) - 1) / amax)))


def float_to_shift(g: ir.Graph, calibration: Mapping[str, np.ndarray] | None = None) -> ir.Graph:
    """Replace each conv2d/linear with parameter weights of shift form (``shift_form``) by a shift layer.

    ``calibration`` (graph input name -> a representative batch) sets each layer's activation format
    from the largest input magnitude it sees (8-bit); without it every layer takes the documented
    16-bit default. The per-channel scale and the bias follow as float mul/add nodes when needed.
    """
    candidates = {}
    for n in g.nodes:
        if isinstance(n, (ir.Conv2d, ir.Linear)) and all(p in g.params for p in n.inputs[1:]):
            form = shift_form(g.params[n.inputs[1]])
            if form is not None:
                candidates[n.name] = form
    if not candidates:
        return g
    amax = _input_ranges(g, [n for n in g.nodes if n.name in candidates], calibration)
    params, nodes = dict(g.params), []
    for n in g.nodes:
        if n.name not in candidates:
            nodes.append(n)
            continue
        m, base, bits, zero = candidates[n.name]
        # the largest power of two <= every channel's scale: the integer part stays exact, and the
        # remaining multipliers are in [1, ...), 1 exactly for a power-of-two scale
        scale_exp = int(np.floor(np.log2(base.min())))
        mult = (base / 2.0 ** scale_exp).astype(np.float32)
        act_bits, frac_bits = (activation_format(amax[n.name]) if calibration is not None
                               else (DEFAULT_ACT_BITS, DEFAULT_FRAC_BITS))
        codes_name = f"{n.name}.codes"
        params[codes_name] = codes.pack(codes.encode(m.astype(np.float64), bits, zero, 0), bits)
        scaled = bool((mult != 1).any())
        bias = n.inputs[2:] if not scaled else ()
        out = f"{n.output}.shift" if scaled else n.output
        attrs = dict(bits=bits, zero=zero, scale_exp=scale_exp, act_bits=act_bits, frac_bits=frac_bits,
                     weight_shape=m.shape)
        if isinstance(n, ir.Conv2d):
            nodes.append(ShiftConv2d(name=n.name, inputs=(n.inputs[0], codes_name, *bias), output=out,
                                     stride=n.stride, padding=n.padding, dilation=n.dilation, groups=n.groups,
                                     **attrs))
        else:
            nodes.append(ShiftLinear(name=n.name, inputs=(n.inputs[0], codes_name, *bias), output=out, **attrs))
        if scaled:
            mult_name = f"{n.name}.channel_scale"
            params[mult_name] = mult.reshape((-1, 1, 1) if isinstance(n, ir.Conv2d) else (-1,))
            scaled_out = f"{n.output}.scaled" if len(n.inputs) == 3 else n.output
            nodes.append(ir.Mul(name=f"{n.name}.scale", inputs=(out, mult_name), output=scaled_out))
            if len(n.inputs) == 3:
                b = params[n.inputs[2]]
                params[f"{n.name}.bias_shaped"] = b.reshape((-1, 1, 1)) if isinstance(n, ir.Conv2d) else b
                nodes.append(ir.Add(name=f"{n.name}.bias", inputs=(scaled_out, f"{n.name}.bias_shaped"),
                                    output=n.output))
    return g.with_nodes(nodes, params).validate()


def _input_ranges(g: ir.Graph, layers: list[ir.Node], calibration) -> dict[str, float]:
    """Each layer's largest input magnitude on the calibration batch, by the float reference."""
    if calibration is None:
        return {}
    probe = ir.Graph(g.inputs, g.nodes, tuple(dict.fromkeys(n.inputs[0] for n in layers)), g.params)
    values = dict(zip(probe.outputs, run_graph_ref(probe, calibration)))
    return {n.name: float(np.abs(values[n.inputs[0]]).max()) for n in layers}


def relative_error(reference: ir.Graph, converted: ir.Graph, feeds: Mapping[str, np.ndarray]) -> float:
    """The largest over outputs of ||converted - reference|| / ||reference|| on ``feeds`` (reference run)."""
    worst = 0.0
    for want, got in zip(run_graph_ref(reference, feeds), run_graph_ref(converted, feeds)):
        norm = float(np.linalg.norm(want.astype(np.float64)))
        worst = max(worst, float(np.linalg.norm(got.astype(np.float64) - want)) / (norm or 1.0))
    return worst
