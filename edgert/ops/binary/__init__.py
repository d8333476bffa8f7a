"""The binary op family: bit-packed XNOR-popcount kernels (Numba) and their NumPy references.

Importing this package registers the IR nodes, runtime kernels, reference rules and profiler counts.
"""

from edgert.ops.binary import bits, conv, nodes, register  # noqa: F401  (registration side effects)
from edgert.ops.binary.nodes import BinaryConv2d, BinaryDense, BinaryMaxPool2d, BitPack, words

__all__ = ["BinaryConv2d", "BinaryDense", "BinaryMaxPool2d", "BitPack", "words"]
