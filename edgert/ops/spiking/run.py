"""Bind the spiking kernels to the runtime, the NumPy reference and the profiler.

The runtime calls a sequence kernel with the current shaped [T, batch, ...] (``Engine.step`` passes
T = 1). Each node's state dict holds its arrays ("mem", "syn", "spk") and running counts taken from
the execution: "samples" (time steps x batch), "spikes" (nonzero outputs), "neurons" (per sample),
and for the fused Linear "events" (nonzero inputs), "synops" (effective accumulates: events x
out_features) and "path" (the last path taken: "event" or "dense").
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from edgert import ir
from edgert.ops import reference
from edgert.ops.spiking import kernels as K
from edgert.ops.spiking.nodes import Delay, Leaky, LeakyIntegrator, LinearLeaky, RLeaky, RSynaptic, Synaptic
from edgert.runtime import kernels as runtime_kernels
from edgert.runtime import profile

_F = np.float32


def _seq(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(x.shape[0], x.shape[1], -1), dtype=_F)


def _vec(p: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(p.reshape(-1), dtype=_F)


def _zeros(state: dict, key: str, b: int, n: int) -> np.ndarray:
    """A state array, zeroed when missing or when the batch changed (as snntorch re-initialises)."""
    a = state.get(key)
    if a is None or a.shape != (b, n):
        a = state[key] = np.zeros((b, n), _F)
    return a


def _tally(state: dict, t: int, b: int, n: int, spikes: int) -> None:
    state["samples"] = state.get("samples", 0) + t * b
    state["spikes"] = state.get("spikes", 0) + int(spikes)
    state["neurons"] = n


def leaky_sequence(node: Leaky, args: list[np.ndarray], state: dict) -> np.ndarray:
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    out = np.empty_like(cur)
    spikes = K.leaky_seq(cur, _vec(args[1]), _vec(args[2]), _zeros(state, "mem", b, n), out, *K.codes(node))
    _tally(state, t, b, n, spikes)
    return out.reshape(x.shape)


def synaptic_sequence(node: Synaptic, args: list[np.ndarray], state: dict) -> np.ndarray:
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    out = np.empty_like(cur)
    spikes = K.synaptic_seq(cur, _vec(args[1]), _vec(args[2]), _vec(args[3]), _zeros(state, "syn", b, n),
                            _zeros(state, "mem", b, n), out, *K.codes(node))
    _tally(state, t, b, n, spikes)
    return out.reshape(x.shape)


def rleaky_sequence(node: RLeaky, args: list[np.ndarray], state: dict) -> np.ndarray:
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    out = np.empty_like(cur)
    empty = np.zeros(0, _F)
    if node.all_to_all:
        wt, rb, v = _transposed(state, args[3]), _vec(args[4]), empty
    else:
        wt, rb, v = np.zeros((0, 0), _F), empty, _vec(args[3])
    spikes = K.rleaky_seq(cur, _vec(args[1]), _vec(args[2]), wt, rb, v, node.all_to_all,
                          _zeros(state, "spk", b, n), _zeros(state, "mem", b, n), out, *K.codes(node))
    _tally(state, t, b, n, spikes)
    return out.reshape(x.shape)


def _transposed(state: dict, w: np.ndarray) -> np.ndarray:
    """The recurrent weight transposed (rows per presynaptic neuron), once per parameter array."""
    if "wt" not in state or state.get("w_src") is not w:
        state["wt"], state["w_src"] = np.ascontiguousarray(w.T, dtype=_F), w
    return state["wt"]


def rsynaptic_sequence(node: RSynaptic, args: list[np.ndarray], state: dict) -> np.ndarray:
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    out = np.empty_like(cur)
    spikes = K.rsynaptic_seq(cur, _vec(args[1]), _vec(args[2]), _vec(args[3]), _transposed(state, args[4]),
                             _vec(args[5]), _zeros(state, "spk", b, n), _zeros(state, "syn", b, n),
                             _zeros(state, "mem", b, n), out, *K.codes(node))
    _tally(state, t, b, n, spikes)
    return out.reshape(x.shape)


def leaky_integrator_sequence(node: LeakyIntegrator, args: list[np.ndarray], state: dict) -> np.ndarray:
    """Not a spiking layer (its output is the membrane), so it keeps no spike counts."""
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    out = np.empty_like(cur)
    K.leaky_integrator_seq(cur, _vec(args[1]), _vec(args[2]), _zeros(state, "mem", b, n), out)
    return out.reshape(x.shape)


def delay_sequence(node: Delay, args: list[np.ndarray], state: dict) -> np.ndarray:
    x = args[0]
    cur = _seq(x)
    t, b, n = cur.shape
    if state.get("buf") is None or state["buf"].shape != (node.steps, b, n):
        state["buf"], state["pos"] = np.zeros((node.steps, b, n), _F), np.zeros(1, np.int64)
    out = np.empty_like(cur)
    K.delay_seq(cur, state["buf"], state["pos"], out)
    return out.reshape(x.shape)


_prepared: dict[int, tuple] = {}  # id(weight) -> (node, bias, beta, threshold, what _prepare made of them),
# while the weight array lives


def _prepare(node: LinearLeaky, wt, bias, beta, thr) -> tuple:
    """(beta, threshold) as vectors, the blocked adder's weights (when kernels.adder() is "blocked"; else
    none, and the step-by-step adder runs) and the kernel's reset codes: made once per node, parameter
    arrays and adder (a run at batch 1 takes ~50 us; these took ~3)."""
    hit = _prepared.get(id(wt))
    adder = K.adder()
    if hit is None or not (hit[0] is node and hit[1] is bias and hit[2] is beta and hit[3] is thr
                           and hit[5] == adder):
        if hit is None:
            weakref.finalize(wt, _prepared.pop, id(wt), None)
        blocks = K.block_weights(wt, bias) if adder == "blocked" else K.NO_BLOCKS
        hit = _prepared[id(wt)] = (node, bias, beta, thr, (_vec(beta), _vec(thr), *blocks, K.codes(node)), adder)
    return hit[4]


def _events(node: LinearLeaky, x: np.ndarray, wt, bias, beta, thr, mem: np.ndarray) -> tuple:
    """The event path over x [T, B, K] into a new out [T, B, O], mem in place. Returns (out, events,
    spikes, most, _prepare's tuple): events above ``most`` (the most input events the event path takes;
    event_below 0 or an empty input takes none) leave the input to the dense path, below 0 say it holds
    NaN or Inf; out and mem are untouched in both cases."""
    prepared = _prepare(node, wt, bias, beta, thr)
    out = np.empty(x.shape[:2] + (wt.shape[1],), _F)
    most = math.ceil(node.event_below * x.size) - 1
    if most < 0:
        return out, 0, 0, most, prepared
    beta, thr, wb, wb_bias, rows, codes = prepared
    return out, *K.linear_leaky_events(x, wt, bias, wb, wb_bias, rows, beta, thr, mem, out, most, *codes), most, \
        prepared


def linear_leaky_sequence(node: LinearLeaky, args: list[np.ndarray], state: dict) -> np.ndarray:
    """Fused Linear + Leaky over all time steps in one kernel call: event-driven (weight rows of the
    inputs that spiked) when the input is sparser than ``node.event_below``, else one dense matrix
    product over all time steps followed by the neuron kernel. Raises NonFinite, state untouched, when
    the input holds NaN or Inf."""
    x, wt, bias = _seq(args[0]), args[1], args[2]
    t, b, k = x.shape
    o = wt.shape[1]
    mem = _zeros(state, "mem", b, o)
    out, nnz, spikes, most, (beta, thr, _, _, _, codes) = _events(node, x, *args[1:5], mem)
    if nnz < 0 or nnz > most and not np.isfinite(x).all():
        raise runtime_kernels.NonFinite(f"the input of {node.name!r} holds NaN or Inf; clean the sensor data, "
                                        "or look for an overflow in the layers before it")
    if nnz <= most:
        state["path"] = "event"
    else:
        nnz = int(np.count_nonzero(x))
        cur = (x.reshape(t * b, k) @ wt + bias).reshape(t, b, o)
        spikes = K.leaky_seq(cur, beta, thr, mem, out, *codes)
        state["path"] = "dense"
    state["events"] = state.get("events", 0) + nnz
    state["synops"] = state.get("synops", 0) + nnz * o
    _tally(state, t, b, o, spikes)
    return out


def linear_leaky_chain(nodes: list[LinearLeaky], params: list[list[np.ndarray]], states: list[dict],
                       x: np.ndarray) -> np.ndarray | None:
    """A run from reset of fused layers each reading the one before, all event-driven: the kernels
    called back to back, without the per-node Python of linear_leaky_sequence (~10 us of a 75 us SHD
    run at batch 1). Returns None, with the states to be reset, when a layer's input is too dense for
    the event path or holds NaN or Inf: the node-by-node path then runs (and names a bad value)."""
    t, b = x.shape[:2]
    for node, p, state in zip(nodes, params, states):
        o = p[0].shape[1]
        mem = np.zeros((b, o), _F)
        out, nnz, spikes, most, _ = _events(node, x, *p, mem)
        if not 0 <= nnz <= most:
            return None
        state.clear()
        state.update(mem=mem, path="event", events=nnz, synops=nnz * o, samples=t * b, spikes=int(spikes), neurons=o)
        x = out
    return x


runtime_kernels.CHAIN_KERNELS["linear_leaky"] = linear_leaky_chain


SEQUENCES = {"leaky": leaky_sequence, "synaptic": synaptic_sequence, "rleaky": rleaky_sequence,
             "rsynaptic": rsynaptic_sequence, "linear_leaky": linear_leaky_sequence,
             "leaky_integrator": leaky_integrator_sequence, "delay": delay_sequence}


def _stepper(seq):
    def step(node: ir.Node, args: list[np.ndarray], state: dict) -> np.ndarray:
        return seq(node, [args[0][None]] + list(args[1:]), state)[0]
    return step


for _op, _fn in SEQUENCES.items():
    runtime_kernels.register_kernel(_op)(_stepper(_fn))
    runtime_kernels.register_sequence_kernel(_op, checks_finite=_op == "linear_leaky")(_fn)


# ---- reference rules: one time step through the NumPy references -----------------------------

def _ref_state(state: dict, key: str, shape: tuple) -> np.ndarray:
    a = state.get(key)
    return np.zeros(shape, _F) if a is None or a.shape != shape else a


def _leaky_rule(node, args, spec, state):
    x = args[0].astype(_F)
    spk, state["mem"] = K.leaky_step_ref(x, args[1], args[2], _ref_state(state, "mem", x.shape), node)
    return spk


def _synaptic_rule(node, args, spec, state):
    x = args[0].astype(_F)
    spk, state["syn"], state["mem"] = K.synaptic_step_ref(
        x, args[1], args[2], args[3], _ref_state(state, "syn", x.shape), _ref_state(state, "mem", x.shape), node)
    return spk


def _rleaky_rule(node, args, spec, state):
    x = args[0].astype(_F)
    spk, state["mem"] = K.rleaky_step_ref(x, args[1], args[2], args[3:], _ref_state(state, "spk", x.shape),
                                          _ref_state(state, "mem", x.shape), node)
    state["spk"] = spk
    return spk


def _rsynaptic_rule(node, args, spec, state):
    x = args[0].astype(_F)
    spk, state["syn"], state["mem"] = K.rsynaptic_step_ref(
        x, *args[1:6], _ref_state(state, "spk", x.shape), _ref_state(state, "syn", x.shape),
        _ref_state(state, "mem", x.shape), node)
    state["spk"] = spk
    return spk


def _leaky_integrator_rule(node, args, spec, state):
    x = args[0].astype(_F)
    state["mem"] = K.leaky_integrator_step_ref(x, args[1], args[2], _ref_state(state, "mem", x.shape), node)
    return state["mem"]


def _delay_rule(node, args, spec, state):
    x = args[0].astype(_F)
    y, state["buf"] = K.delay_step_ref(x, _ref_state(state, "buf", (node.steps,) + x.shape), node)
    return y


def _linear_leaky_rule(node, args, spec, state):
    x = args[0].astype(_F)
    shape = (x.shape[0], args[1].shape[1])
    spk, state["mem"] = K.linear_leaky_step_ref(x, *args[1:], _ref_state(state, "mem", shape), node)
    return spk


reference.EXTRA_RULES.update(leaky=_leaky_rule, synaptic=_synaptic_rule, rleaky=_rleaky_rule,
                             rsynaptic=_rsynaptic_rule, linear_leaky=_linear_leaky_rule,
                             leaky_integrator=_leaky_integrator_rule, delay=_delay_rule)


# ---- static counts per time step (the measured ones are in each node's state) -----------------

def _neuron_counts(node, ins, out, batch):
    n = out.numel(batch)
    per = {"leaky": 4, "synaptic": 6, "rleaky": 5, "rsynaptic": 7, "linear_leaky": 4,  # mul/add/compare/reset
           "leaky_integrator": 3, "delay": 0}[node.op]
    counts = {"elementwise": per * n}
    if node.op == "rleaky":
        f = ins[0].shape[-1]
        counts["accumulate"] = n * f if node.all_to_all else 0  # every neuron spiking: the worst case
        counts["elementwise"] += 0 if node.all_to_all else n
    if node.op == "rsynaptic":
        counts["accumulate"] = n * ins[0].shape[-1]
    if node.op == "linear_leaky":
        counts["accumulate"] = n * ins[1].shape[0]  # dense input: every row read
    return counts


for _op in SEQUENCES:
    profile.COUNTERS[_op] = _neuron_counts
