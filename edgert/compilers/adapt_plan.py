"""What test-time adaptation needs from a compiled graph: BatchNorm statistics and source params, taps.

``plan_adaptation(unfolded, compiled)`` compares the graph before BatchNorm folding with the graph
that will be built. For every BatchNorm it records how the runtime can re-estimate its statistics:

- ``"kept"``: the BatchNorm node survived; the tap is its input, the runtime rewrites its mean/var.
- ``"folded"``: it was folded into conv/linear ``node``; the tap is the folded output (equal to the
  BatchNorm's output), and the source conv weight/bias, gamma, beta, mean and var are kept as extra
  parameters ``adapt.<bn>.<name>`` so the runtime can re-fold w' = w*s, b' = (b - mean)*s + beta.

- ``"threshold"``: it was folded, with the sign after it, into binary layer ``node``'s integer
  thresholds; the tap is the layer's packed input, from which the runtime recomputes the layer's
  float output (its source scale and bias kept as ``adapt.<bn>.scale``/``.bias``) to take the
  BatchNorm's input moments, then re-derives the thresholds.

- ``"fused"``: it was folded into a Linear that was then fused with the spiking neuron after it
  (LinearLeaky ``node``, weight stored transposed); the tap is the layer's input, from which the
  runtime recomputes the BatchNorm's input with the kept source weight and bias.

BatchNorms folded into anything else are listed under ``"skipped"``. The plan
also names the classifier's input features (the input of a final linear layer, in a spiking model the
one feeding the output neurons) for memory policies.
Taps become extra outputs of the stage that computes them; the Engine does not return them from run().
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgert import ir


def plan_adaptation(unfolded: ir.Graph, compiled: ir.Graph) -> tuple[ir.Graph, dict[str, Any]]:
    """``compiled`` with the extra source parameters added, and the JSON-ready plan for the manifest."""
    producers = unfolded.producers()
    after = {n.name: n for n in compiled.nodes}
    made_by = compiled.producers()
    params = dict(compiled.params)
    layers, skipped = [], []
    for bn in unfolded.nodes:
        if not isinstance(bn, ir.BatchNorm):
            continue
        kept = after.get(bn.name)
        if isinstance(kept, ir.BatchNorm):
            g, b, m, v = kept.inputs[1:]
            layers.append({"bn": bn.name, "kind": "kept", "eps": bn.eps, "tap": kept.inputs[0],
                           "gamma": g, "beta": b, "mean": m, "var": v})
            continue
        prod = producers.get(bn.inputs[0])
        binary = after.get(prod.name) if prod is not None else None
        if (getattr(binary, "output_kind", None) == "bits" and len(binary.inputs) >= 4
                and binary.inputs[2:4] == (f"{prod.name}.threshold", f"{prod.name}.flip")):
            layers.append(_threshold_entry(bn, prod, binary, unfolded.params, params))
            continue
        fused = _fused_into_neuron(prod, compiled) if prod is not None else None
        if fused is not None:
            layers.append(_fused_entry(bn, prod, fused, unfolded.params, params))
            continue
        folded = made_by.get(bn.output)
        if (prod is None or folded is None or folded.name != prod.name
                or folded.inputs[1:] != (f"{prod.name}.weight_folded", f"{prod.name}.bias_folded")):
            skipped.append(bn.name)
            continue
        src = unfolded.params
        w = src[prod.inputs[1]]
        b = src[prod.inputs[2]] if len(prod.inputs) == 3 else np.zeros(w.shape[0], np.float32)
        source = dict(zip(("gamma", "beta", "mean", "var"), (src[p] for p in bn.inputs[1:])),
                      weight=w, bias=b)
        entry = {"bn": bn.name, "kind": "folded", "eps": bn.eps, "tap": bn.output, "node": prod.name,
                 "weight": folded.inputs[1], "bias": folded.inputs[2]}
        layers.append(_keep_source(bn, source, entry, params))
    plan: dict[str, Any] = {"norm": layers, "skipped": skipped}
    last = made_by.get(compiled.outputs[0]) if len(compiled.outputs) == 1 else None
    if last is not None and last.stateful and last.op != "linear_leaky":
        last = made_by.get(last.inputs[0])  # a spiking classifier: Linear -> output neurons
    if (isinstance(last, ir.Linear) or getattr(last, "op", None) == "linear_leaky") \
            and last.inputs[0] not in dict(compiled.inputs):
        plan["features"] = last.inputs[0]
    plan["taps"] = list(dict.fromkeys([e["tap"] for e in layers] + ([plan["features"]] if "features" in plan else [])))
    graph = ir.Graph(inputs=compiled.inputs, nodes=compiled.nodes, outputs=compiled.outputs, params=params)
    return graph.validate(), plan


def _fused_into_neuron(linear: ir.Node, compiled: ir.Graph) -> ir.Node | None:
    """The LinearLeaky node that Linear ``linear``, with a BatchNorm folded in, was fused into, if any."""
    want = (f"{linear.name}.weight_folded.t", f"{linear.name}.bias_folded")
    return next((n for n in compiled.nodes if n.op == "linear_leaky" and n.inputs[1:3] == want), None)


def _fused_entry(bn: ir.BatchNorm, linear: ir.Node, fused: ir.Node, src: dict[str, np.ndarray],
                 params: dict[str, np.ndarray]) -> dict[str, Any]:
    """The plan of a BatchNorm folded into ``linear`` that was then fused with the neuron after it."""
    w = src[linear.inputs[1]]
    b = src[linear.inputs[2]] if len(linear.inputs) == 3 else np.zeros(w.shape[0], np.float32)
    entry = {"bn": bn.name, "kind": "fused", "eps": bn.eps, "tap": fused.inputs[0], "node": fused.name,
             "weight_t": fused.inputs[1], "bias": fused.inputs[2]}
    source = dict(zip(("gamma", "beta", "mean", "var"), (src[p] for p in bn.inputs[1:])), weight=w, bias=b)
    return _keep_source(bn, source, entry, params)


def _threshold_entry(bn: ir.BatchNorm, layer: ir.Node, binary: ir.Node, src: dict[str, np.ndarray],
                     params: dict[str, np.ndarray]) -> dict[str, Any]:
    """The plan of a BatchNorm folded into binary layer ``binary`` (``layer`` before folding)."""
    entry: dict[str, Any] = {"bn": bn.name, "kind": "threshold", "eps": bn.eps, "tap": binary.inputs[0],
                             "node": binary.name, "weight": binary.inputs[1], "threshold": binary.inputs[2],
                             "flip": binary.inputs[3]}
    source = dict(zip(("gamma", "beta", "mean", "var"), (src[p] for p in bn.inputs[1:])),
                  scale=src[layer.inputs[2]], bias=src[layer.inputs[3]])
    return _keep_source(bn, source, entry, params)


def _keep_source(bn: ir.BatchNorm, source: dict[str, np.ndarray], entry: dict[str, Any],
                 params: dict[str, np.ndarray]) -> dict[str, Any]:
    """Keep ``source`` arrays as parameters ``adapt.<bn>.<name>``, named in ``entry`` as source_<name>."""
    for k, arr in source.items():
        params[f"adapt.{bn.name}.{k}"] = np.asarray(arr, np.float32)
        entry[f"source_{k}"] = f"adapt.{bn.name}.{k}"
    return entry
