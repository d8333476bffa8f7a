"""NIR export: an edgert ir.Graph (one time step) -> a .nir file that ``nir.read`` accepts.

Neurons become NIR's continuous-time primitives at time step ``dt`` (the inverse of the NIR
frontend's forward-Euler discretisation, with r = tau/dt so the input scale is one): Leaky -> LIF
(IF when beta = 1), Synaptic -> CubaLIF with w_in = tau_syn/dt, LinearLeaky -> Affine + LIF. NIR
cannot express a subtractive reset, snntorch's reset timing (reset_delay), the instant-reset
mechanism or graded spikes, so each neuron's metadata records them ("edgert_reset",
"edgert_reset_delay", "edgert_instant_reset", "edgert_graded") and the graph's metadata records dt
and a note saying what a plain NIR reader will get wrong. edgert's NIR import reads them back exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert import ir
from edgert.errors import UnsupportedOpError

NOTE = ("Written by edgert. NIR cannot express: subtractive reset (NIR resets to v_reset), snntorch's "
        "reset timing (edgert_reset_delay: true means the reset is applied at the next step, from the "
        "previous membrane), or graded spikes. Each neuron's metadata holds edgert_reset, "
        "edgert_reset_delay, edgert_instant_reset and edgert_graded; readers that ignore them simulate "
        "a reset to zero in the same step.")


def _neuron_meta(n) -> dict:
    return {"edgert_reset": n.reset, "edgert_reset_delay": bool(n.reset_delay),
            "edgert_instant_reset": n.instant_reset, "edgert_graded": float(n.graded)}


def to_nir(graph: ir.Graph, path: str | Path | None = None, dt: float = 1e-4):
    """Convert ``graph`` to a nir.NIRGraph (and write it to ``path`` when given); returns the graph."""
    import nir

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError("NIR export takes graphs with one input and one output")
    specs = graph.infer_specs()
    p = lambda k: np.asarray(graph.params[k], np.float32)  # noqa: E731
    nodes: dict = {"input": nir.Input(input_type={"input": np.array(graph.inputs[0][1].shape[1:])})}
    edges, last, problems = [], "input", []

    def add(key: str, node) -> None:
        nonlocal last
        nodes[key] = node
        edges.append((last, key))
        last = key

    def lif(key, n, beta, thr):
        beta = beta.astype(np.float64)
        if np.any(beta >= 1.0):
            if not np.all(beta == 1.0):
                raise ValueError("beta = 1 for some neurons only (IF and LIF mixed in one layer)")
            return nir.IF(r=np.full(thr.shape, 1.0 / dt), v_threshold=thr, v_reset=np.zeros_like(thr),
                          metadata=_neuron_meta(n))
        tau = dt / (1.0 - beta)
        return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros_like(thr), v_threshold=thr,
                       v_reset=np.zeros_like(thr), metadata=_neuron_meta(n))

    for n in graph.nodes:
        try:
            match n.op:
                case "linear":
                    w = p(n.inputs[1])
                    add(n.name, nir.Affine(weight=w, bias=p(n.inputs[2])) if len(n.inputs) == 3
                        else nir.Linear(weight=w))
                case "linear_leaky":
                    add(f"{n.name}.affine", nir.Affine(weight=np.ascontiguousarray(p(n.inputs[1]).T),
                                                       bias=p(n.inputs[2])))
                    add(n.name, lif(n.name, n, p(n.inputs[3]), p(n.inputs[4])))
                case "leaky":
                    add(n.name, lif(n.name, n, p(n.inputs[1]), p(n.inputs[2])))
                case "synaptic":
                    alpha, beta = p(n.inputs[1]).astype(np.float64), p(n.inputs[2]).astype(np.float64)
                    if np.any(alpha >= 1) or np.any(beta >= 1):
                        raise ValueError("alpha or beta = 1 has no finite time constant")
                    tau_syn, tau_mem = dt / (1 - alpha), dt / (1 - beta)
                    thr = p(n.inputs[3])
                    add(n.name, nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt,
                                            v_leak=np.zeros_like(thr), v_threshold=thr, v_reset=np.zeros_like(thr),
                                            w_in=tau_syn / dt, metadata=_neuron_meta(n)))
                case "conv2d":
                    t, l, b, r = n.padding
                    if (t, l) != (b, r):
                        raise ValueError(f"asymmetric padding {n.padding}")
                    w = p(n.inputs[1])
                    bias = p(n.inputs[2]) if len(n.inputs) == 3 else np.zeros(w.shape[0], np.float32)
                    add(n.name, nir.Conv2d(input_shape=np.array(specs[n.inputs[0]].shape[2:]), weight=w,
                                           stride=np.array(n.stride), padding=np.array((t, l)),
                                           dilation=np.array(n.dilation), groups=n.groups, bias=bias))
                case "avg_pool2d":
                    t, l, b, r = n.padding
                    if (t, l) != (b, r) or n.ceil_mode or (any(n.padding) and not n.count_include_pad):
                        raise ValueError("asymmetric padding, ceil_mode or count_include_pad=False")
                    add(n.name, nir.AvgPool2d(kernel_size=np.array(n.kernel), stride=np.array(n.stride),
                                              padding=np.array((t, l))))
                case "flatten":
                    add(n.name, nir.Flatten(input_type={"input": np.array(specs[n.inputs[0]].shape[1:])},
                                            start_dim=n.start_dim - 1, end_dim=-1))
                case _:
                    problems.append(f"{n.op} {n.name!r}")
        except ValueError as e:
            problems.append(f"{n.op} {n.name!r}: {e}")
    if problems:
        raise UnsupportedOpError("NIR export cannot express:\n  " + "\n  ".join(problems)
                                 + "\nNIR has no max pooling, batch norm (fold it first: the default "
                                 "compile does) or recurrent neurons in edgert's export yet.")
    nodes["output"] = nir.Output(output_type={"output": np.array(specs[graph.outputs[0]].shape[1:])})
    edges.append((last, "output"))
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"edgert_dt": float(dt), "edgert_note": NOTE})
    if path is not None:
        nir.write(str(path), g)
    return g
