"""Run a graph through the C backend on the host (cc with AddressSanitizer and UBSan), beside its
NumPy reference: the shared check of every C kernel test."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c.emit import emit_c
from edgert.compilers.backends.c.host import build_host, run_host
from edgert.ops.reference import run_graph_ref

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")


def _records(graph: ir.Graph, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """[N, sum of per-sample sizes]: each record holds every input's sample, flattened, in order."""
    arrays = [np.asarray(feeds[name], np.float32) for name, _ in graph.inputs]
    n = arrays[0].shape[0]
    return np.concatenate([a.reshape(n, -1) for a in arrays], axis=1)


def run_c(graph: ir.Graph, feeds: dict[str, np.ndarray], tmp_path, sanitize: bool = True) -> list[np.ndarray]:
    """Outputs of the C build for inputs batched along axis 0 (a stateful graph: axis 0 is time)."""
    model = emit_c(graph)
    exe = build_host(model, tmp_path, sanitize=sanitize)
    flat = run_host(exe, _records(graph, feeds), model.output_size)
    specs = graph.infer_specs()
    outs, off = [], 0
    for name in graph.outputs:
        shape = tuple(1 if d is None else d for d in specs[name].shape[1:])
        size = math.prod(shape)
        outs.append(flat[:, off:off + size].reshape((flat.shape[0],) + shape))
        off += size
    return outs


def reference(graph: ir.Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The NumPy reference, one sample (or one time step, state carried) at a time."""
    n = next(iter(feeds.values())).shape[0]
    state: dict = {}
    per = [run_graph_ref(graph, {k: v[i:i + 1] for k, v in feeds.items()}, state) for i in range(n)]
    return [np.concatenate([p[k] for p in per]) for k in range(len(graph.outputs))]


def single(node: ir.Node, in_specs: list[tuple[str, tuple]], params: dict[str, np.ndarray]) -> ir.Graph:
    """A one-node graph: ``in_specs`` are the activation inputs (name, shape with batch None)."""
    return ir.Graph(tuple((n, ir.TensorSpec(s)) for n, s in in_specs), (node,), (node.output,), params).validate()
