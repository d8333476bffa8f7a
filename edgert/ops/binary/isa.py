"""Which binary-kernel variant this CPU runs: its features read once at load, the best variant picked.

One artifact serves every x86-64 host (the kernels are compiled when they are first used, never stored),
so the choice is made here, at run time: ``avx512`` (VPOPCNTDQ: ``vpopcntq`` on 512-bit words) where the
CPU has AVX-512F/BW/VL and VPOPCNTDQ, ``avx2`` (``vpshufb`` nibble-table popcount on 256-bit words) where
it has AVX2, else ``generic`` (the Numba kernels in conv.py: scalar POPCNT, or NEON ``cnt`` on Arm).
``$EDGERT_BINARY_VARIANT`` or :func:`force` overrides the choice (tests run every variant the CPU can).
"""

from __future__ import annotations

import functools
import os

VARIANTS = ("avx512", "avx2", "generic")  # best first
NEEDS = {  # LLVM feature names each variant's code uses
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq"),
    "avx2": ("avx2",),
    "generic": (),
}
_forced: str | None = None


@functools.cache
def cpu_features() -> frozenset[str]:
    """The host CPU's LLVM feature names that are present (read once per process)."""
    import llvmlite.binding as llvm
    return frozenset(f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+"))


def supported() -> list[str]:
    """The variants this CPU can run, best first."""
    return list(_supported())


@functools.cache
def _supported() -> tuple[str, ...]:  # read once: variant() is called on every conv (2 us uncached)
    import platform
    x86 = platform.machine() in ("x86_64", "AMD64")
    return tuple(v for v in VARIANTS if v == "generic" or (x86 and all(f in cpu_features() for f in NEEDS[v])))


def force(variant: str | None) -> None:
    """Run ``variant`` from now on (None: back to the best supported one)."""
    if variant is not None and variant not in _supported():
        raise ValueError(f"binary kernel variant {variant!r} does not run on this CPU (it lacks "
                         f"{[f for f in NEEDS.get(variant, ('unknown variant',)) if f not in cpu_features()]}); "
                         f"choose one of {supported()}")
    global _forced
    _forced = variant


def variant() -> str:
    """The conv variant in use: forced, else $EDGERT_BINARY_VARIANT, else the best this CPU supports."""
    if _forced is not None:
        return _forced
    env = os.environ.get("EDGERT_BINARY_VARIANT")
    if env:
        if env not in _supported():
            force(env)  # raises, naming what the CPU lacks
        return env
    return _supported()[0]


def describe() -> str:
    """One line for a bench table or a profile: the variant and the CPU it was chosen for."""
    import llvmlite.binding as llvm
    return f"binary conv kernel: {variant()} (CPU {llvm.get_host_cpu_name()}, supports {', '.join(supported())})"
