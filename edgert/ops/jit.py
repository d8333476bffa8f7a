"""Generated LLVM IR compiled for this host's x86-64 CPU: the target machine and LLVM's -O3 pipeline
(the binary and shift kernels that Numba cannot be made to emit; called through ctypes)."""

from __future__ import annotations

import functools

from llvmlite import ir


@functools.cache
def binding():
    """llvmlite's binding layer, with the native target ready (once)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def target_machine(features: str, cpu: str | None = None):
    """An x86-64 target machine with these LLVM features added (``cpu``: None = the host's, with its own)."""
    llvm = binding()
    target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")
    host = cpu is None
    feats = llvm.get_host_cpu_features().flatten() if host else ""
    feats = ",".join(f for f in (feats, features) if f)
    return target.create_target_machine(cpu=llvm.get_host_cpu_name() if host else cpu, features=feats, opt=3,
                                        codemodel="jitdefault")


def optimize(mod: ir.Module, tm, vector_code: bool = False):
    """Parse and run LLVM's -O3 pipeline (allocas to registers, loop-invariant address arithmetic hoisted).
    ``vector_code``: the IR is vector code already, so the vectorizers and the unroller stay off."""
    llvm = binding()
    m = llvm.parse_assembly(str(mod))
    m.triple = tm.triple
    m.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    if vector_code:
        pto.loop_vectorization = pto.slp_vectorization = pto.loop_interleaving = False
        pto.loop_unrolling = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(m, pb)
    return m
