"""Spike counts, sparsity, synaptic operations and energy of a spiking model, from its compiled run.

The numbers come from the counters each spiking kernel keeps in its Engine node state (see
``edgert.ops.spiking.run``), so they describe the execution that happened, not a static bound.
Synaptic operations are NeuroBench's effective accumulates: one per input event per synapse it
reaches (events x fan-out), measured where the synaptic layer is fused with its neuron; a neuron fed
by a separate (TVM) layer reports its spikes and updates only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerActivity:
    """One spiking layer over everything run since the last reset."""

    name: str
    op: str
    samples: int        # time steps x batch
    neurons: int        # per sample
    spikes: int
    synops: int | None  # effective accumulates (None: the synaptic layer is not fused, so not measured)
    path: str           # "event", "dense" or "" (which synaptic path ran last)

    @property
    def neuron_updates(self) -> int:
        return self.samples * self.neurons

    @property
    def spike_rate(self) -> float:
        """Spikes per neuron per time step."""
        return self.spikes / max(self.neuron_updates, 1)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.spike_rate

    def to_json(self) -> dict:
        return {**asdict(self), "neuron_updates": self.neuron_updates, "spike_rate": self.spike_rate,
                "sparsity": self.sparsity}


def activity(engine) -> list[LayerActivity]:
    """Per spiking layer of ``engine`` (an edgert Engine), in execution order, since its last reset."""
    ops = {n.name: n.op for n in engine.artifact.graph.nodes}
    out = []
    for name, st in engine.node_state().items():
        if "samples" not in st:
            continue
        out.append(LayerActivity(name, ops[name], st["samples"], st["neurons"], st["spikes"],
                                 st.get("synops"), st.get("path", "")))
    return out


def energy_pj(layers: list[LayerActivity], energy: dict) -> dict:
    """Compute-only energy in picojoules from a target's [energy] table (per-op figures, memory not
    counted): synaptic ops at ``accumulate_pj`` and neuron updates at ``neuron_update_pj`` (or, where
    a target has none, four ``elementwise_pj`` ops: multiply, add, compare, reset)."""
    per_update = energy.get("neuron_update_pj")
    if per_update is None:
        per_update = 4 * energy.get("elementwise_pj", 0.0)
    syn = sum(layer.synops or 0 for layer in layers) * energy.get("accumulate_pj", 0.0)
    upd = sum(layer.neuron_updates for layer in layers) * per_update
    return {"synaptic_pj": syn, "neuron_pj": upd, "total_pj": syn + upd,
            "model": "compute-only per-op table; synaptic ops of unfused layers not counted"}
