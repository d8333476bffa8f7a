"""Kernel-backend ops the runtime runs node by node (Numba kernels), looked up by op kind.

A family module (``edgert.ops.<family>``) registers ``fn(node, args, state) -> output`` for each of
its ops with ``register_kernel``; ``state`` is a dict the Engine keeps per node across ``step`` calls
and clears on ``reset``.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from edgert import ir
from edgert.errors import ArtifactSchemaError, EdgertError

Kernel = Callable[[ir.Node, list[np.ndarray], dict], np.ndarray]
KERNELS: dict[str, Kernel] = {}


def register_kernel(op: str) -> Callable[[Kernel], Kernel]:
    def add(fn: Kernel) -> Kernel:
        KERNELS[op] = fn
        return fn
    return add


# Optional whole-sequence kernels of stateful ops: same signature, activations shaped [T, batch, ...]
# (parameters as they are). Engine.run uses them to run a spiking model layer by layer over time.
SEQUENCE_KERNELS: dict[str, Kernel] = {}
# Sequence kernels that check their input 0 for NaN and Inf themselves, on the values they read anyway:
# Engine.run skips its own pass over a model input that only such a kernel reads.
CHECKS_FINITE: set[str] = set()


# Chain kernels: fn(nodes, params, states, x) runs consecutive nodes of one op, each reading only the one
# before, over all time steps with the least Python (x [T, batch, features], float32, C-contiguous;
# params per node in input order after the first; states as the Engine keeps them, filled as a run
# from reset would). Returns the last node's output, or None to leave the run to the node-by-node path.
CHAIN_KERNELS: dict[str, Callable] = {}


class NonFinite(EdgertError):
    """Raised by a CHECKS_FINITE kernel, before it changes any state, when its input holds NaN or Inf.
    For a model input the engine then runs its full input check, which names the first bad value."""


def register_sequence_kernel(op: str, checks_finite: bool = False) -> Callable[[Kernel], Kernel]:
    def add(fn: Kernel) -> Kernel:
        SEQUENCE_KERNELS[op] = fn
        if checks_finite:
            CHECKS_FINITE.add(op)
        return fn
    return add


def kernel_for(node: ir.Node) -> Kernel:
    """The registered kernel for ``node``'s op, importing its family module on first use."""
    if node.op not in KERNELS:
        importlib.import_module(f"edgert.ops.{node.family}")
    if node.op not in KERNELS:
        raise ArtifactSchemaError(f"this edgert has no kernel for op {node.op!r} (node {node.name!r}); "
                                  "upgrade edgert on this device")
    return KERNELS[node.op]
