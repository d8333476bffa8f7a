"""Spiking networks: neuron nodes (Leaky, Synaptic, RLeaky, Linear+Leaky), their Numba kernels and
NumPy references, and their counts. Importing the package registers all of them."""

from edgert.ops.spiking import counts, kernels, nodes, run  # noqa: F401  (registers ops, kernels, rules)
from edgert.ops.spiking.nodes import Leaky, LinearLeaky, Reset, RLeaky, Synaptic

__all__ = ["Leaky", "LinearLeaky", "Reset", "RLeaky", "Synaptic"]
