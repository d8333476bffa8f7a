"""TVM backend: ir.Graph -> shared library (Relax VM executable) with per-kernel node attribution.

The library's ``main(<graph inputs>, <params in sorted order>)`` returns a tuple of the graph outputs.
When convolution weights are packed for vector code (the default pipeline on CPU) it also exports
``transform_params(<params>) -> (<packed weights>)`` and ``main_run(<inputs>, <params>, <packed>)``,
so a runner packs once per parameter set; ``main`` stays callable and does both.
``edgert.runtime.tvm_runner.TvmRunner`` loads and runs the library without torch.

Kernel naming: every IR node becomes a PrimFunc named after the node (``sanitize(node.name)``: any
character outside [A-Za-z0-9_] becomes "_", so "layer1.0.conv1" -> "layer1_0_conv1"; a clash gets a
numeric suffix). FuseOps then merges chains such as conv2d -> batch_norm -> relu into one kernel named
``fused_<k1>_<k2>_...`` from the member PrimFunc names; unfused kernels keep the node's name. Nodes
that become free views (a flatten rewritten by RewriteDataflowReshape) have no kernel. Weight packing
kernels are ``<node>__pack`` and run in transform_params, not per inference. The exact
kernel -> nodes mapping is read off the module after fusion (never parsed from names) and returned
by ``compile_graph`` as ``TvmBuild.kernels``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from edgert import ir
from edgert._tvm import import_tvm
from edgert.compilers.backends.tvm_lower import lower_graph
from edgert.compilers.backends.tvm_schedule import lanes_for, schedule_cpu
from edgert.errors import InternalError, TargetError

tvm = import_tvm()
from tvm import relax  # noqa: E402

PIPELINES = ("fused+schedule", "fused", "unfused")


@dataclass(frozen=True)
class TvmBuild:
    """A compiled library plus what a profiler needs to attribute kernel time to IR nodes."""

    library: bytes  # a shared object; load with TvmRunner
    param_names: tuple[str, ...]  # the order TvmRunner expects the parameter arrays in
    kernels: dict[str, list[str]]  # kernel (PrimFunc symbol) -> IR node names it computes
    packed_params: tuple[str, ...] = ()  # weights transform_params packs ("<node>__pack" kernels)
    compile_seconds: float = 0.0
    pipeline: str = "fused+schedule"


def _target(target: dict) -> "tvm.target.Target":
    if not isinstance(target, dict) or "kind" not in target:
        raise TargetError(f"TVM target must be a dict with a 'kind' key such as "
                          f"{{'kind': 'llvm', 'mtriple': 'x86_64-linux-gnu'}}, got {target!r}")
    try:
        return tvm.target.Target(dict(target))
    except Exception as e:  # TVM raises its own error types for bad keys or values
        raise TargetError(f"TVM rejected target {target!r}: {e}") from e


def _relax_passes(pipeline: str, target) -> tuple[list, list, list]:
    """(passes up to FuseOps, FuseTIR and cleanup, everything after) for one of PIPELINES."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    if pipeline not in PIPELINES:
        raise ValueError(f"unknown TVM pipeline {pipeline!r}; choose one of {PIPELINES}")
    fuse = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()]
    cleanup = [relax.transform.RewriteDataflowReshape(), relax.transform.DeadCodeElimination()]
    if pipeline != "unfused":
        fuse.append(relax.transform.FuseOps())
        cleanup.insert(0, relax.transform.FuseTIR())
    after = [schedule_cpu()] if pipeline == "fused+schedule" else []
    after += cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)
    return fuse, cleanup, after


def _members(mod) -> dict[str, list[str]]:
    """For each fused Relax function (attr Primitive) the PrimFuncs it calls, in order."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    out: dict[str, list[str]] = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function) or not func.attrs or "Primitive" not in func.attrs:
            continue
        names: list[str] = []
        for block in func.body.blocks:
            for b in block.bindings:
                if isinstance(b.value, relax.Call) and b.value.op.same_as(call_tir):
                    names.append(b.value.args[0].name_hint)
        out[gv.name_hint] = names
    return out


def compile_graph(graph: ir.Graph, target: dict, *, cross_compiler: str | None = None,
                  pipeline: str = "fused+schedule") -> TvmBuild:
    """Compile ``graph`` for ``target`` (a TVM target dict) into a shared library plus a kernel map.

    ``cross_compiler`` (e.g. ``"aarch64-linux-gnu-g++"``) links the library for another machine.
    ``pipeline`` is one of ``PIPELINES``: "fused+schedule" (default: fusion plus edgert's CPU
    schedules), "fused" (TVM's own CPU pipeline, unscheduled loops) or "unfused" (one kernel per node).
    """
    t0 = time.perf_counter()
    tgt = _target(target)
    if cross_compiler and shutil.which(cross_compiler) is None:
        raise TargetError(f"cross compiler {cross_compiler!r} is not on PATH; install it (Debian/Ubuntu: "
                          "`apt-get install g++-aarch64-linux-gnu` provides aarch64-linux-gnu-g++) or "
                          "set the target's cross compiler to one that is installed")
    low = lower_graph(graph, lanes_for(tgt) if pipeline == "fused+schedule" else None)
    fuse, cleanup, after = _relax_passes(pipeline, tgt)
    with tgt:
        mod = tvm.transform.Sequential(fuse)(low.mod)
        members = _members(mod)
        # FuseTIR turns each fused Relax function into one PrimFunc of the same name; a reshape that
        # is a plain view becomes a VM builtin, and DCE drops its now unused PrimFunc
        mod = tvm.transform.Sequential(cleanup)(mod)
        kernels: dict[str, list[str]] = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc):
                parts = members.get(gv.name_hint, [gv.name_hint])
                nodes = [low.primfunc_to_node[p] for p in parts if p in low.primfunc_to_node]
                if len(nodes) != len(parts):
                    raise InternalError(f"TVM kernel {gv.name_hint!r} calls PrimFuncs {parts} that "
                                        "were not emitted for any IR node")
                kernels[gv.name_hint] = nodes
        mod = tvm.transform.Sequential(after)(mod)
    ex = tvm.compile(mod, target=tgt, relax_pipeline=None)
    with tempfile.TemporaryDirectory(prefix="edgert-tvm-") as d:
        path = os.path.join(d, "lib.so")
        if cross_compiler:
            ex.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_compiler))
        else:
            ex.export_library(path)
        with open(path, "rb") as f:
            library = f.read()
    return TvmBuild(library, low.param_names, kernels, low.packed, time.perf_counter() - t0, pipeline)


def build(graph: ir.Graph, target: dict, cross_compiler: str | None = None) -> bytes:
    """Compile ``graph`` for ``target`` and return the shared library's bytes (see compile_graph)."""
    return compile_graph(graph, target, cross_compiler=cross_compiler).library
