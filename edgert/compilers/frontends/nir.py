"""NIR frontend: a .nir file (or nir.NIRGraph) -> ir.Graph, at an explicit time step ``dt``.

NIR's neurons are continuous-time; edgert runs snntorch's discrete-time update, so each is
discretised with forward Euler at ``dt``, as snntorch's own NIR import does:

- LIF (tau, r, v_leak=0, v_threshold, v_reset=0): beta = 1 - dt/tau, input scale r dt / tau.
- IF (r, v_threshold, v_reset=0): beta = 1, input scale r dt.
- CubaLIF (tau_syn, tau_mem, r, v_leak=0, v_threshold, v_reset=0, w_in): alpha = 1 - dt/tau_syn,
  beta = 1 - dt/tau_mem, input scale (w_in dt / tau_syn)(r dt / tau_mem).
- LI (tau, r, v_leak=0): a LeakyIntegrator, U_t = beta U_{t-1} + (r dt / tau) I_t with beta = 1 - dt/tau;
  its output is the membrane itself, so the scale stays in.
- Delay (delay in seconds): a Delay by delay/dt steps (a whole number, the same for every element).

The input scale is folded into the threshold (the membrane is measured in units of the scale, which
leaves the spikes unchanged). NIR resets to v_reset in the same step, so neurons get reset "zero"
with reset_delay=False; NIR cannot say "subtract" (the Braille graphs carry it in their file name),
so ``reset`` overrides it. Files written by edgert's NIR export carry edgert's exact reset mode,
timing and graded-spike factor in each node's metadata, and its dt in the graph's, and those win.
Affine, Linear, Conv2d, SumPool2d (a depthwise all-ones conv), AvgPool2d and Flatten map to edgert
nodes.

Recurrence: a neuron whose output feeds an Affine or Linear that feeds back into that neuron alone (the
NIR paper's Braille RNNs). A loop in a NIR graph carries its source's output of the previous step (the
one-step delay of every simulator in the NIR paper, and of snntorch's import), so the recurrent current
of step t is R(S_{t-1}) = S_{t-1} W^T + b (b at t = 0), added to the neuron's input: CubaLIF becomes
RSynaptic (it joins the synaptic current), LIF and IF become RLeaky with ``all_to_all`` (it joins the
membrane; the input scale folds into the threshold as for the feed-forward input). Other loops and
branches are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgert import ir
from edgert.compilers.frontends._common import Names, Problems
from edgert.errors import EdgertError, IRValidationError
from edgert.ops.spiking.nodes import Delay, Leaky, LeakyIntegrator, Reset, RLeaky, RSynaptic, Synaptic

SUPPORTED = ["Input", "Output", "Affine", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "LIF",
             "IF", "CubaLIF", "LI", "Delay", "recurrent Affine/Linear on LIF, IF, CubaLIF"]
_RECURRENT = ("LIF", "IF", "CubaLIF")  # neurons that take a recurrent weight
_F = np.float32


def _s(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return _s(v.item())
    return v.item() if isinstance(v, np.generic) else v


def _pair(v: Any) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[-1]))


def _order(graph) -> tuple[list[str], dict[str, str]]:
    """Node names from Input to Output along the edges, and the recurrent weight of each neuron that has
    one ({neuron: Affine or Linear}: a loop neuron -> weight -> neuron). Raises for other branches and
    cycles."""
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    starts = [k for k, n in graph.nodes.items() if type(n).__name__ == "Input"]
    if len(starts) != 1:
        raise EdgertError(f"NIR graph has {len(starts)} Input nodes; edgert imports graphs with one input")

    def loops_back(cur: str, k: str) -> bool:
        return (type(graph.nodes[k]).__name__ in ("Affine", "Linear") and succ.get(k) == [cur]
                and pred.get(k) == [cur] and type(graph.nodes[cur]).__name__ in _RECURRENT)

    order, recurrent, cur = [], {}, starts[0]
    while True:
        order.append(cur)
        nxt = succ.get(cur, [])
        loop = [k for k in nxt if loops_back(cur, k)]
        if loop:
            recurrent[cur] = loop[0]
            nxt = [k for k in nxt if k != loop[0]]
        if not nxt:
            return order, recurrent
        if (len(loop) > 1 or len(nxt) > 1 or nxt[0] in order
                or [k for k in pred[nxt[0]] if not loops_back(nxt[0], k)] != [cur]):
            raise EdgertError(f"NIR graph branches or loops at node {cur!r} (edges to {nxt}); edgert imports "
                              "chains whose only loops are a neuron's recurrent Affine/Linear weight "
                              "(neuron -> weight -> the same neuron)")
        cur = nxt[0]


def from_nir(source: str | Path | Any, dt: float | None = None, reset: str | None = None) -> ir.Graph:
    """Import a NIR graph as a one-time-step ir.Graph (input [batch, ...]).

    ``dt`` is the time step in seconds (required unless the file was written by edgert); ``reset``
    ("zero", "subtract" or "none") overrides NIR's reset-to-v_reset for neurons without edgert metadata.
    """
    import nir

    graph = nir.read(str(source)) if isinstance(source, (str, Path)) else source
    meta = {k: _s(v) for k, v in (graph.metadata or {}).items()}
    dt = dt if dt is not None else meta.get("edgert_dt")
    if dt is not None and not dt > 0:
        raise EdgertError(f"dt={dt}: the time step must be a positive number of seconds, e.g. 1e-4")
    if dt is None:
        raise EdgertError("a NIR graph has no time step; pass dt (seconds per step), e.g. "
                          "`edgert compile MODEL.nir --dt 1e-4` or from_nir(path, dt=1e-4) (snntorch "
                          "exports use dt=1e-4)")
    if reset is not None and reset not in [r.value for r in Reset]:
        raise EdgertError(f"reset={reset!r}; valid values are {[r.value for r in Reset]}")
    problems = Problems("NIR frontend")
    names = Names(("x",))
    nodes: list[ir.Node] = []
    params: dict[str, np.ndarray] = {}
    order, recurrent = _order(graph)
    first = graph.nodes[order[0]]
    shape = tuple(int(d) for d in np.asarray(first.output_type["output"]).reshape(-1))
    cur = "x"
    in_shape = shape

    def param(label: str, a: np.ndarray) -> str:
        name = names(label)
        params[name] = np.ascontiguousarray(a, dtype=_F)
        return name

    def emit(cls, key: str, inputs: tuple[str, ...], **attrs) -> None:
        nonlocal cur, shape
        out = names(key)
        node = cls(name=out, inputs=(cur,) + inputs, output=out, **attrs)
        spec = node.infer([ir.TensorSpec((None,) + shape)] + [ir.TensorSpec(params[i].shape) for i in inputs])
        nodes.append(node)
        cur, shape = out, tuple(spec.shape[1:])

    def neuron_attrs(n) -> dict:
        m = {k: _s(v) for k, v in (n.metadata or {}).items()}
        if "edgert_reset" in m:
            return dict(reset=m["edgert_reset"], reset_delay=bool(m["edgert_reset_delay"]),
                        instant_reset=m["edgert_instant_reset"], graded=float(m["edgert_graded"]))
        if not np.allclose(getattr(n, "v_reset", 0.0), 0.0):
            raise ValueError("v_reset != 0 is not supported (edgert resets to zero or by subtraction)")
        return dict(reset=reset or Reset.ZERO.value, reset_delay=False)

    def recurrent_weight(key: str) -> tuple[str, str]:
        """Parameters (W, b) of the neuron's recurrent Affine/Linear (b zero for a Linear)."""
        r = graph.nodes[recurrent[key]]
        w = np.asarray(r.weight, _F)
        b = np.asarray(r.bias, _F) if type(r).__name__ == "Affine" else np.zeros(w.shape[0], _F)
        return param(f"{recurrent[key]}.weight", w), param(f"{recurrent[key]}.bias", b)

    for key in order[1:]:
        n = graph.nodes[key]
        kind = type(n).__name__
        try:
            if kind == "Output":
                continue
            if kind in ("Affine", "Linear"):
                w = np.asarray(n.weight, _F)
                b = (param(f"{key}.bias", n.bias),) if kind == "Affine" else ()
                emit(ir.Linear, key, (param(f"{key}.weight", w),) + b)
            elif kind == "Conv2d":
                ph, pw = _pair(n.padding) if not isinstance(_s(n.padding), str) else (None, None)
                if ph is None:
                    raise ValueError(f"string padding {_s(n.padding)!r}")
                bias = np.asarray(n.bias, _F) if n.bias is not None and np.size(n.bias) else None
                emit(ir.Conv2d, key, (param(f"{key}.weight", n.weight),) + ((param(f"{key}.bias", bias),)
                                                                           if bias is not None else ()),
                     stride=_pair(n.stride), padding=(ph, pw), dilation=_pair(n.dilation), groups=int(n.groups))
            elif kind == "SumPool2d":
                kh, kw = _pair(n.kernel_size)
                c = shape[0]
                emit(ir.Conv2d, key, (param(f"{key}.ones", np.ones((c, 1, kh, kw), _F)),),
                     stride=_pair(n.stride), padding=_pair(n.padding), groups=c)
            elif kind == "AvgPool2d":
                emit(ir.AvgPool2d, key, (), kernel=_pair(n.kernel_size), stride=_pair(n.stride),
                     padding=_pair(n.padding))
            elif kind == "Flatten":
                if int(n.end_dim) not in (-1, len(shape) - 1):
                    raise ValueError(f"end_dim={int(n.end_dim)}")
                emit(ir.Flatten, key, (), start_dim=int(n.start_dim) + 1)
            elif kind in ("LIF", "IF"):
                v_leak = np.asarray(getattr(n, "v_leak", 0.0))
                if not np.allclose(v_leak, 0.0):
                    raise ValueError("v_leak != 0 is not supported")
                r = np.broadcast_to(np.asarray(n.r, np.float64), shape)
                if kind == "LIF":
                    tau = np.broadcast_to(np.asarray(n.tau, np.float64), shape)
                    beta, scale = 1.0 - dt / tau, r * dt / tau
                else:
                    beta, scale = np.ones(shape), r * dt
                thr = np.broadcast_to(np.asarray(n.v_threshold, np.float64), shape) / scale
                attrs = neuron_attrs(n)
                ps = (param(f"{key}.beta", np.broadcast_to(beta, shape)),
                      param(f"{key}.threshold", np.broadcast_to(thr, shape)))
                if key in recurrent:  # the recurrent current joins the input: RLeaky's membrane term
                    emit(RLeaky, key, ps + recurrent_weight(key), all_to_all=True, **attrs)
                else:
                    emit(Leaky, key, ps, **attrs)
            elif kind == "LI":
                if not np.allclose(np.asarray(n.v_leak), 0.0):
                    raise ValueError("v_leak != 0 is not supported")
                tau = np.broadcast_to(np.asarray(n.tau, np.float64), shape)
                r = np.broadcast_to(np.asarray(n.r, np.float64), shape)
                emit(LeakyIntegrator, key, (param(f"{key}.beta", 1.0 - dt / tau), param(f"{key}.scale", r * dt / tau)))
            elif kind == "Delay":
                steps = np.asarray(n.delay, np.float64).reshape(-1) / dt
                k = int(round(float(steps[0])))
                if not np.allclose(steps, k, rtol=0, atol=1e-6):
                    raise ValueError(f"delays {np.unique(np.asarray(n.delay))} s are not one whole number of "
                                     f"steps of dt={dt} s; edgert delays all elements by the same steps")
                if k > 0:
                    emit(Delay, key, (), steps=k)
            elif kind == "CubaLIF":
                if not np.allclose(np.asarray(n.v_leak), 0.0):
                    raise ValueError("v_leak != 0 is not supported")
                tau_syn = np.broadcast_to(np.asarray(n.tau_syn, np.float64), shape)
                tau_mem = np.broadcast_to(np.asarray(n.tau_mem, np.float64), shape)
                scale = (np.asarray(n.w_in) * dt / tau_syn) * (np.asarray(n.r) * dt / tau_mem)
                thr = np.broadcast_to(np.asarray(n.v_threshold, np.float64), shape) / scale
                ps = (param(f"{key}.alpha", 1.0 - dt / tau_syn), param(f"{key}.beta", 1.0 - dt / tau_mem),
                      param(f"{key}.threshold", thr))
                if key in recurrent:  # the recurrent current joins the input: RSynaptic's synaptic term
                    emit(RSynaptic, key, ps + recurrent_weight(key), **neuron_attrs(n))
                else:
                    emit(Synaptic, key, ps, **neuron_attrs(n))
            else:
                problems.add(kind, key)
        except (ValueError, TypeError, IRValidationError) as e:
            problems.add(kind, key, str(e))
    problems.raise_if_any(SUPPORTED, "Rewrite those nodes in the model before exporting it to NIR.")
    return ir.Graph(inputs=(("x", ir.TensorSpec((None,) + in_shape)),), nodes=tuple(nodes), outputs=(cur,),
                    params=params).validate()
