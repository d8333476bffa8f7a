"""Shift networks: weights sign * 2^p in 3-5 bits, fixed-point activations, exact integer sums."""

from edgert.ops.shift import nodes, register  # noqa: F401  (importing registers the op family)
