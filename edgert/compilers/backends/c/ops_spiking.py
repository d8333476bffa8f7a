"""C emitters of the spiking ops (Leaky, Synaptic, RLeaky, RSynaptic, Linear fused with Leaky): one time step per
edgert_model_run, the neuron state in static arrays (``ctx.state``: zero at start and after
edgert_model_reset), kernels in kernels/spiking.c.

Spikes match the NumPy reference (``run_graph_ref``) one for one: the neuron updates are its float32
operations in its order (so kernels/spiking.c is built with -ffp-contract=off: a fused multiply-add
rounds once where the reference rounds twice), and the synaptic sums of the fused Linear and of the
all-to-all recurrence, which the reference takes in float64 and rounds once, are kept as float pairs
that round to the same float32 (see the comment in kernels/spiking.c).
"""

from __future__ import annotations

import math

import numpy as np

from edgert.errors import UnsupportedOpError
from edgert.ops.spiking.nodes import RESET_CODE, Reset

FILES = ("kernels/spiking.h", "kernels/spiking.c")
FLAGS: dict[str, list[str]] = {"kernels/spiking.c": ["-ffp-contract=off"]}


def _f32(v: float) -> str:
    """A float32 value as an exact C literal."""
    return float(np.float32(v)).hex() + "f"


def _tail(n) -> str:
    """The kernels' last arguments: reset, delay, instant reset, graded spike value."""
    return (f"{RESET_CODE[Reset(n.reset)]}, {int(n.reset_delay)}, {RESET_CODE[Reset(n.instant_reset)]}, "
            f"{_f32(n.graded)}")


def _params(n, ctx, names: tuple[str, ...]) -> tuple[list[str], int]:
    """Pointers to a neuron's parameters and their step: 0 (one value each, a 1-element array) when
    every one of them holds a single value repeated (a scalar broadcast to the feature shape: no
    flash spent on copies), else 1 (the arrays as they are)."""
    arrays = [ctx.graph.params.get(name) for name in names]
    if all(a is not None and a.size and np.all(_bits(a) == _bits(a).flat[0]) for a in arrays):
        return [ctx.const(name, np.asarray(a, np.float32).reshape(-1)[:1])
                for name, a in zip(names, arrays)], 0
    return [ctx.ptr(name) for name in names], 1


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _leaky(n, ctx) -> str:
    (beta, thr), step = _params(n, ctx, n.inputs[1:3])
    count = ctx.numel(n.output)
    mem = ctx.state(f"{n.name}_mem", count)
    return (f"  ek_leaky({ctx.ptr(n.inputs[0])}, {beta}, {thr}, {step}, {mem}, {ctx.ptr(n.output)}, {count}, "
            f"{_tail(n)});")


def _synaptic(n, ctx) -> str:
    (alpha, beta, thr), step = _params(n, ctx, n.inputs[1:4])
    count = ctx.numel(n.output)
    syn, mem = ctx.state(f"{n.name}_syn", count), ctx.state(f"{n.name}_mem", count)
    return (f"  ek_synaptic({ctx.ptr(n.inputs[0])}, {alpha}, {beta}, {thr}, {step}, {syn}, {mem}, "
            f"{ctx.ptr(n.output)}, {count}, {_tail(n)});")


def _rleaky(n, ctx) -> str:
    count = ctx.numel(n.output)
    y = ctx.ptr(n.output)
    prev, mem = ctx.state(f"{n.name}_spk", count), ctx.state(f"{n.name}_mem", count)
    lines = []
    if n.all_to_all:
        (beta, thr), step = _params(n, ctx, n.inputs[1:3])
        lines.append(_recurrent_current(n, ctx, n.inputs[3], n.inputs[4], prev, count, y))
        rec, v = y, "0"
    else:
        (beta, thr, v), step = _params(n, ctx, n.inputs[1:4])
        rec = "0"
    lines.append(f"  ek_rleaky({ctx.ptr(n.inputs[0])}, {rec}, {v}, {beta}, {thr}, {step}, {prev}, {mem}, {y}, "
                 f"{count}, {_tail(n)});")
    return "\n".join(lines)


def _recurrent_current(n, ctx, w_name: str, b_name: str, prev: str, count: int, out: str) -> str:
    """The all-to-all recurrent current of the previous spikes into ``out``: W is laid out as rows of
    W.T, and the previous spikes are sparse, so only the rows of neurons that spiked are read."""
    w = ctx.graph.params.get(w_name)
    if w is None:
        raise UnsupportedOpError(f"{n.op} {n.name!r}: the recurrent weight {w_name!r} must be a "
                                 "parameter for the C backend (it is laid out at compile time)")
    wt = ctx.const(f"{w_name}_t", np.asarray(w, np.float32).T)
    lo = ctx.scratch(4 * count)
    # an event limit above the row count: always the event path, as the Numba kernel
    return f"  ek_linear_current({prev}, {count}, {wt}, {ctx.ptr(b_name)}, {count}, {count + 1}, {out}, {lo});"


def _rsynaptic(n, ctx) -> str:
    count = ctx.numel(n.output)
    y = ctx.ptr(n.output)
    prev = ctx.state(f"{n.name}_spk", count)
    syn, mem = ctx.state(f"{n.name}_syn", count), ctx.state(f"{n.name}_mem", count)
    (alpha, beta, thr), step = _params(n, ctx, n.inputs[1:4])
    return (_recurrent_current(n, ctx, n.inputs[4], n.inputs[5], prev, count, y) + "\n"
            f"  ek_rsynaptic({ctx.ptr(n.inputs[0])}, {y}, {alpha}, {beta}, {thr}, {step}, {prev}, {syn}, {mem}, "
            f"{y}, {count}, {_tail(n)});")


def _leaky_integrator(n, ctx) -> str:
    (beta, scale), step = _params(n, ctx, n.inputs[1:3])
    count = ctx.numel(n.output)
    mem = ctx.state(f"{n.name}_mem", count)
    return (f"  ek_leaky_integrator({ctx.ptr(n.inputs[0])}, {beta}, {scale}, {step}, {mem}, {ctx.ptr(n.output)}, "
            f"{count});")


def _delay(n, ctx) -> str:
    count = ctx.numel(n.output)
    ring, pos = ctx.state(f"{n.name}_ring", n.steps * count), ctx.state(f"{n.name}_pos", 1, "int32_t")
    return f"  ek_delay({ctx.ptr(n.inputs[0])}, {ring}, {pos}, {n.steps}, {count}, {ctx.ptr(n.output)});"


def event_limit(event_below: float, k: int) -> int:
    """Nonzero inputs from which a step takes the dense path (``nnz < limit``: the event path).

    A microcontroller has no SIMD to make the dense path pay: on the emulated Cortex-M4F the event
    path took fewer instructions at every density of 0/1 spikes (0.84x at 100%) and about as many
    on dense floats (0.95-1.06x), so every step is event-driven (limit past k); only
    ``event_below=0``, the explicit "always dense", keeps the dense path. Both give the same bits.
    """
    return 0 if event_below <= 0 else k + 1


def _linear_leaky(n, ctx) -> str:
    x, wt, bias = n.inputs[:3]
    k, o = ctx.shape(wt)
    (beta, thr), step = _params(n, ctx, n.inputs[3:5])
    y = ctx.ptr(n.output)
    mem = ctx.state(f"{n.name}_mem", o)
    lo = ctx.scratch(4 * o)
    # the current is summed into the output buffer, then the neurons turn it into spikes in place
    return (f"  ek_linear_current({ctx.ptr(x)}, {k}, {ctx.ptr(wt)}, {ctx.ptr(bias)}, {o}, "
            f"{event_limit(n.event_below, k)}, {y}, {lo});\n"
            f"  ek_leaky({y}, {beta}, {thr}, {step}, {mem}, {y}, {o}, {_tail(n)});")


EMITTERS = {"leaky": _leaky, "synaptic": _synaptic, "rleaky": _rleaky, "rsynaptic": _rsynaptic,
            "linear_leaky": _linear_leaky, "leaky_integrator": _leaky_integrator, "delay": _delay}
