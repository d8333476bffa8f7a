"""ir.Graph -> model.h, model.c and the kernel sources they call (the C backend's one entry point).

Each op family has a module ``ops_<family>.py`` with ``EMITTERS`` (op kind -> function(node, ctx)
returning the C statements for that node), ``FILES`` (the kernel sources it ships, relative to this
package) and ``FLAGS`` (extra compiler flags per kernel file). An emitter names values only through
the ``Context``: ``ctx.ptr(name)`` is a typed pointer to any value (graph input, parameter, activation),
``ctx.const`` and ``ctx.state`` declare arrays of its own, ``ctx.scratch`` borrows arena bytes for the
node's own duration. Buffers are placed after every node is emitted (arena.plan), so emitted code
holds placeholders until then.

Values: graph inputs are read in place from the caller's ``input`` (flattened, one after another),
graph outputs are written in place to ``output``; views (flatten, reshape, bit_flatten) share their
input's buffer; an elementwise node may write over its input when nothing reads that input later;
every other activation gets arena bytes for its lifetime.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from edgert import ir
from edgert.compilers.backends.c.arena import Buffer, peak, plan
from edgert.errors import UnsupportedOpError

CTYPES = {"float32": "float", "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t",
          "uint64": "uint64_t", "int8": "int8_t", "bool": "uint8_t"}
FAMILIES = ("float", "binary", "shift", "spiking")
VIEWS = ("flatten", "reshape", "bit_flatten")  # same bytes, new shape
IN_PLACE = ("relu", "clip", "sigmoid", "tanh", "binary_sign", "add", "mul", "sub", "div", "silu", "hardswish",
            "hardsigmoid", "gelu", "leaky_relu", "prelu", "layer_norm")  # may write over input 0
_TOKEN = re.compile("\x01([^\x02]*)\x02")


def _family_module(family: str):
    return importlib.import_module(f"edgert.compilers.backends.c.ops_{family}")


def emitters() -> dict[str, tuple[str, object]]:
    """op kind -> (family, emit function) for every op the C backend supports."""
    out = {}
    for fam in FAMILIES:
        try:
            mod = _family_module(fam)
        except ModuleNotFoundError as e:
            if e.name != f"edgert.compilers.backends.c.ops_{fam}":
                raise
            continue
        out.update({op: (fam, fn) for op, fn in mod.EMITTERS.items()})
    return out


def supported_ops() -> list[str]:
    return sorted(set(emitters()) | set(VIEWS))


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def c_array(values: np.ndarray) -> str:
    """C initializer of an array's elements; floats as exact hex literals."""
    flat = np.ascontiguousarray(values).ravel()
    if flat.dtype == np.float32:
        items = [float(v).hex() + "f" for v in flat.tolist()]
    elif flat.dtype == np.bool_:
        items = [str(int(v)) for v in flat.tolist()]
    elif flat.dtype == np.uint64:
        items = [f"{int(v):#x}u" for v in flat.tolist()]
    elif flat.dtype == np.int64:
        items = [f"INT64_C({int(v)})" for v in flat.tolist()]
    else:
        items = [str(int(v)) for v in flat.tolist()]
    if not items:
        items = ["0"]
    lines = [", ".join(items[i:i + 12]) for i in range(0, len(items), 12)]
    return "{\n  " + ",\n  ".join(lines) + "\n}"


@dataclass
class CModel:
    """The emitted sources (relative path -> text) and the figures the header states."""

    files: dict[str, str]
    input_size: int
    output_size: int
    arena_bytes: int
    liveness_bytes: int  # the lower bound the arena planner aims at (arena.peak)
    state_bytes: int
    weight_bytes: int  # bytes of const arrays (weights in flash)
    stateful: bool
    flags: dict[str, list[str]] = field(default_factory=dict)  # extra compiler flags per source file


class Context:
    """What an emitter may ask of the model being written (see the module docstring)."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.specs = graph.infer_specs()
        self.node_index = 0
        self.consts: list[str] = []      # declarations of const arrays
        self.states: list[tuple[str, str, int]] = []  # (symbol, ctype, count)
        self._symbols: dict[str, str] = {}  # parameter name -> symbol
        self._used: set[str] = set()
        self._scratch: list[Buffer] = []
        self.weight_bytes = 0

    def shape(self, name: str) -> tuple[int, ...]:
        """The value's shape with the batch dimension as 1 (the C code runs one sample)."""
        return tuple(1 if d is None else d for d in self.specs[name].shape)

    def numel(self, name: str) -> int:
        return math.prod(self.shape(name))

    def ctype(self, name: str) -> str:
        return CTYPES[self.specs[name].dtype]

    def ptr(self, name: str) -> str:
        """A typed pointer expression to the value ``name`` (parameters become const arrays)."""
        if name in self.graph.params:
            if name not in self._symbols:
                self._symbols[name] = self.const(name, self.graph.params[name])
            return self._symbols[name]
        return f"\x01{name}\x02"

    def const(self, hint: str, array: np.ndarray) -> str:
        """Declare a const array (it lives in flash) holding ``array``; returns its symbol."""
        array = np.ascontiguousarray(array)
        sym = self._unique("w_" + sanitize(hint))
        ctype = CTYPES[str(array.dtype)]
        self.consts.append(f"static const {ctype} {sym}[{max(array.size, 1)}] = {c_array(array)};")
        self.weight_bytes += array.nbytes
        return sym

    def state(self, hint: str, count: int, ctype: str = "float") -> str:
        """A static array kept across steps, zeroed by edgert_model_reset; returns its symbol."""
        sym = self._unique("s_" + sanitize(hint))
        self.states.append((sym, ctype, max(int(count), 1)))
        return sym

    def scratch(self, nbytes: int, ctype: str = "float") -> str:
        """Arena bytes the current node may use while it runs; returns a typed pointer expression."""
        name = f"\x03scratch{len(self._scratch)}"
        self._scratch.append(Buffer(name, int(nbytes), self.node_index, self.node_index))
        return f"\x01{name}:{ctype}\x02"

    def _unique(self, sym: str) -> str:
        base, k = sym, 1
        while sym in self._used:
            sym, k = f"{base}_{k}", k + 1
        self._used.add(sym)
        return sym


def _check_io(g: ir.Graph, specs: dict[str, ir.TensorSpec]) -> None:
    for name, spec in g.inputs:
        if spec.dtype != "float32":
            raise UnsupportedOpError(f"graph input {name!r} is {spec.dtype}; the C backend takes float32 inputs")
    for name in g.outputs:
        if specs[name].dtype != "float32":
            raise UnsupportedOpError(f"graph output {name!r} is {specs[name].dtype}; the C backend returns "
                                     "float32 outputs (end the model with a float layer)")


def emit_c(graph: ir.Graph) -> CModel:
    """Emit the C sources of ``graph`` (optimized, batch 1 in C); raises UnsupportedOpError listing every
    op the C backend lacks."""
    table = emitters()
    missing = sorted({f"{n.op} ({n.name!r})" for n in graph.nodes if n.op not in table and n.op not in VIEWS})
    if missing:
        raise UnsupportedOpError("the C backend (microcontroller targets) has no kernel for: "
                                 + ", ".join(missing) + f"; it supports {supported_ops()}")
    ctx = Context(graph)
    specs = ctx.specs
    _check_io(graph, specs)
    nodes = graph.nodes
    end = len(nodes)

    # where each value lives: a root buffer (views and in-place nodes join their input's root)
    root: dict[str, str] = {}
    inputs = {name for name, _ in graph.inputs}
    outputs = set(graph.outputs)
    last = {name: end for name in graph.outputs}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v not in graph.params:
                last[v] = max(last.get(v, -1), i)
    members: dict[str, list[str]] = {}

    def join(value: str, onto: str) -> None:
        r = root.get(onto, onto)
        root[value] = r
        members.setdefault(r, [r]).append(value)

    def root_last(r: str) -> int:
        return max(last.get(v, -1) for v in members.get(r, [r]))

    def pinned(r: str) -> bool:  # a graph input, or holding a graph output
        return r in inputs or any(v in outputs for v in members.get(r, [r]))

    copies: list[tuple[str, str, int]] = []  # (destination, value, bytes): outputs not written in place
    for i, n in enumerate(nodes):
        src = n.inputs[0] if n.inputs else None
        if src is None or src in graph.params:
            continue
        r = root.get(src, src)
        if n.op in VIEWS:
            if not (pinned(r) and n.output in outputs):
                join(n.output, src)
        elif (n.op in IN_PLACE and specs[n.output] == specs[src] and not pinned(r)
              and n.output not in outputs and root_last(r) == i):
            join(n.output, src)

    # graph inputs and outputs: offsets into the caller's arrays
    place: dict[str, str] = {}
    off = 0
    for name, _ in graph.inputs:
        place[name] = f"((float *)input + {off})"
        off += ctx.numel(name)
    input_size = off
    off = 0
    for name in graph.outputs:
        r = root.get(name, name)
        if r in place:  # an input, or a value already returned: copy it
            copies.append((f"(output + {off})", r, ctx.numel(name) * 4))
        else:
            place[r] = f"(output + {off})"
        off += ctx.numel(name)
    output_size = off

    body = []
    for i, n in enumerate(nodes):
        ctx.node_index = i
        if n.op in VIEWS:
            if root.get(n.output) is not None:
                body.append(f"  /* {n.op} {n.name}: a view, no code */")
            else:  # a view of an input returned as an output: the bytes must move
                nbytes = ctx.numel(n.output) * np.dtype(specs[n.output].dtype).itemsize
                body.append(f"  memcpy({ctx.ptr(n.output)}, {ctx.ptr(n.inputs[0])}, {nbytes});")
            continue
        fam, fn = table[n.op]
        body.append(f"  /* {n.op} {n.name} */")
        body.append(fn(n, ctx))
    for dst, r, nbytes in copies:
        body.append(f"  memcpy({dst}, \x01{r}\x02, {nbytes});")

    buffers = list(ctx._scratch)
    for v in [n.output for n in nodes]:
        r = root.get(v, v)
        if r != v or r in place:
            continue
        nbytes = ctx.numel(v) * np.dtype(specs[v].dtype).itemsize
        first = next(i for i, n in enumerate(nodes) if n.output == v)
        buffers.append(Buffer(v, nbytes, first, root_last(r)))
    offsets, arena_bytes = plan(buffers)

    def resolve(m: re.Match) -> str:
        name = m.group(1)
        if name.startswith("\x03"):
            key, ctype = name.rsplit(":", 1)
            return f"(({ctype} *)(edgert_arena.bytes + {offsets[key]}))"
        r = root.get(name, name)
        if r in place:
            expr = place[r]
            return expr if specs[name].dtype == "float32" else f"(({CTYPES[specs[name].dtype]} *){expr})"
        return f"(({CTYPES[specs[name].dtype]} *)(edgert_arena.bytes + {offsets[r]}))"

    code = _TOKEN.sub(resolve, "\n".join(body))
    families = sorted({table[n.op][0] for n in nodes if n.op in table})
    state_bytes = sum(count * (8 if ctype.endswith("64_t") else 4 if ctype in ("float", "int32_t") else 1)
                      for _, ctype, count in ctx.states)
    stateful = any(n.stateful for n in nodes)
    files = {"model.h": _header(input_size, output_size, arena_bytes, state_bytes, stateful),
             "model.c": _model_c(ctx, code, families, arena_bytes)}
    flags: dict[str, list[str]] = {}
    for fam in families:
        mod = _family_module(fam)
        for path in mod.FILES:
            files[path] = resources.files("edgert.compilers.backends.c").joinpath(path).read_text()
        flags.update(getattr(mod, "FLAGS", {}))
    return CModel(files, input_size, output_size, arena_bytes, peak(buffers), state_bytes, ctx.weight_bytes,
                  stateful, flags)


def _header(n_in: int, n_out: int, arena: int, state: int, stateful: bool) -> str:
    return f"""/* Generated by edgert. The model as a C API: batch 1, float32 in and out, C order. */
#ifndef EDGERT_MODEL_H
#define EDGERT_MODEL_H

#define EDGERT_INPUT_SIZE {n_in}   /* floats: every graph input, flattened, one after another */
#define EDGERT_OUTPUT_SIZE {n_out}  /* floats: every graph output, likewise */
#define EDGERT_ARENA_BYTES {arena}  /* the static activation arena (inside model.c) */
#define EDGERT_STATE_BYTES {state}  /* static state kept across steps */
#define EDGERT_STATEFUL {int(stateful)}     /* 1: a spiking model; each run is one time step */

/* Run the model on one sample: 0 on success. A stateful model advances one time step. */
int edgert_model_run(const float *input, float *output);
/* One time step of a stateful model (the same as edgert_model_run). */
int edgert_model_step(const float *input, float *output);
/* Forget the state (membranes, synaptic currents); a no-op for a stateless model. */
void edgert_model_reset(void);

#endif
"""


def _model_c(ctx: Context, code: str, families: list[str], arena: int) -> str:
    includes = "\n".join(f'#include "kernels/{fam}.h"' for fam in families)
    states = "\n".join(f"static {ctype} {sym}[{count}];" for sym, ctype, count in ctx.states)
    resets = "\n".join(f"  memset({sym}, 0, sizeof {sym});" for sym, _, _ in ctx.states) or "  /* stateless */"
    consts = "\n".join(ctx.consts)
    arena_decl = ("/* a union keeps the arena aligned for any element type without compiler extensions */\n"
                  f"static union {{ uint64_t align; double d; uint8_t bytes[{arena}]; }} edgert_arena;\n"
                  if arena else "")
    return f"""/* Generated by edgert: weights in flash, one static arena, one kernel call per node. */
#include <stdint.h>
#include <string.h>
#include "model.h"
{includes}

{consts}

{states}

{arena_decl}
int edgert_model_run(const float *input, float *output) {{
{code}
  return 0;
}}

int edgert_model_step(const float *input, float *output) {{
  return edgert_model_run(input, output);
}}

void edgert_model_reset(void) {{
{resets}
}}
"""
