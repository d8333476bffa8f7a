"""C emitters of the float ops: one kernel call per node into kernels/float.c."""

from __future__ import annotations

from edgert import ir

FILES = ("kernels/float.h", "kernels/float.c")
FLAGS: dict[str, list[str]] = {}


def _relu(n: ir.Relu, ctx) -> str:
    return f"  ek_relu({ctx.ptr(n.inputs[0])}, {ctx.ptr(n.output)}, {ctx.numel(n.output)});"


EMITTERS = {"relu": _relu}
