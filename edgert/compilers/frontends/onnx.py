"""ONNX frontend: an .onnx file (or ModelProto) of a float CNN becomes an edgert Graph.

Only the ``onnx`` package is used. Nodes that feed no graph output are skipped; nodes whose inputs are
all constants are folded with ``onnx.reference``; shape arithmetic on the input's shape (Shape, Gather,
Concat ... feeding a Reshape, as exporters write ``x.view(x.size(0), -1)``) is evaluated with the batch
kept symbolic. Pooling follows PyTorch's rules (ceil_mode, count_include_pad), which is what the IR
defines and what torch.onnx.export means.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgert import ir
from edgert.compilers.frontends._common import (BatchChange, Names, Problems, Unsupported, clean, rename_outputs,
                                                reshape_node, show_shape)
from edgert.compilers.frontends.onnx_ops import CONVERTERS, SHAPE_OPS, N, node_attrs
from edgert.compilers.passes.fold_pad_into_conv import fold_pad_into_conv
from edgert.errors import EdgertError, IRValidationError

KNOWN_OPS = set(CONVERTERS) | set(SHAPE_OPS) | {"Constant", "Shape"}
_FIX = ("Re-export without these ops (e.g. replace Softplus with ReLU), or add a converter to CONVERTERS "
        "in edgert/compilers/frontends/onnx_ops.py.")


def from_onnx(model: str | os.PathLike | onnx.ModelProto) -> ir.Graph:
    """Convert an ONNX float CNN with one input into a validated edgert Graph (input "input")."""
    return OnnxImporter(_load(model)).run()


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto, where = model, "the ModelProto"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise EdgertError(f"{path}: no such file")
        try:
            proto = onnx.load(path)
        except Exception as e:  # protobuf DecodeError, missing external data, ...
            raise EdgertError(f"{path} is not a readable ONNX model ({type(e).__name__}: {_first_line(e)}); "
                              "export it again, e.g. with torch.onnx.export") from e
        where = str(path)
    else:
        raise EdgertError(f"from_onnx takes the path of an .onnx file or an onnx.ModelProto, got "
                          f"{type(model).__name__}")
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise EdgertError(f"{where} is not a valid ONNX model ({_first_line(e)}); export it again") from e
    if not proto.graph.output:
        raise EdgertError(f"{where} has no graph outputs; it is not a complete ONNX model")
    return proto


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class OnnxImporter:
    """One walk over an ONNX graph, emitting IR nodes and collecting problems."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
        # One list of the node wrappers, held for the whole walk: sets of ids below rely on it.
        self.onnx_nodes = list(proto.graph.node)
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.nodes: list[ir.Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.values = Names(("input", "output"))
        self.node_names = Names()
        self.consts: dict[str, np.ndarray] = {}  # ONNX name -> value known at compile time
        self.shapes: dict[str, np.ndarray] = {}  # ONNX name -> int vector holding the symbolic batch N
        self.acts: dict[str, str] = {}  # ONNX name -> IR value computed from the input
        self.specs: dict[str, ir.TensorSpec] = {}  # IR value -> spec
        self.param_of: dict[str, str] = {}  # cache key -> parameter name already emitted
        self.dead: set[str] = set()  # ONNX names downstream of a problem
        self.fused: set[int] = set()  # ids of Add nodes already folded into a Linear
        self.problems = Problems("from_onnx")
        self.consumers: dict[str, list[onnx.NodeProto]] = {}

    def run(self) -> ir.Graph:
        for t in self.graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        for node in self.onnx_nodes:
            value = _constant_value(node)
            if value is not None:
                self.consts[node.output[0]] = value
        spec = self._input()
        needed = self._needed()
        for node in self.onnx_nodes:
            if id(node) in needed:
                for i in node.input:
                    self.consumers.setdefault(i, []).append(node)
        for node in self.onnx_nodes:
            if id(node) in needed and id(node) not in self.fused:
                self._node(node)
        outputs = self._outputs()
        self.problems.raise_if_any(sorted(KNOWN_OPS), _FIX)
        graph = rename_outputs(ir.Graph(inputs=(("input", spec),), nodes=tuple(self.nodes),
                                        outputs=tuple(outputs), params=self.params))
        return fold_pad_into_conv(graph.validate())

    # ---- graph walk ----

    def _input(self) -> ir.TensorSpec:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise EdgertError(f"from_onnx: the model has {len(inputs)} inputs {[i.name for i in inputs]}; "
                              "edgert compiles models with exactly one input tensor")
        vi = inputs[0]
        t = vi.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise EdgertError(f"from_onnx: input '{vi.name}' has element type "
                              f"{onnx.TensorProto.DataType.Name(t.elem_type)}; edgert compiles float32 models")
        dims: list[int | None] = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            elif i == 0:
                dims.append(None)
            else:
                raise EdgertError(f"from_onnx: dimension {i} of input '{vi.name}' is symbolic "
                                  f"({d.dim_param or '?'}); only the batch dimension 0 may be dynamic")
        if not dims:
            raise EdgertError(f"from_onnx: input '{vi.name}' has no shape; export with a fixed input shape")
        spec = ir.TensorSpec(tuple(dims))
        self.acts[vi.name] = "input"
        self.specs["input"] = spec
        return spec

    def _needed(self) -> set[int]:
        """Ids of the nodes that some graph output depends on."""
        producer = {o: n for n in self.onnx_nodes for o in n.output if o}
        needed: set[int] = set()
        todo = [o.name for o in self.graph.output]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name not in producer:
                continue
            seen.add(name)
            node = producer[name]
            needed.add(id(node))
            todo.extend(i for i in node.input if i)
        return needed

    def _node(self, node: onnx.NodeProto) -> None:
        ins = [i for i in node.input if i]
        if node.output[0] in self.consts:  # a Constant, read up front
            return
        if any(i in self.dead for i in ins):
            if node.op_type not in KNOWN_OPS:
                self.problems.add(node.op_type, self._where(node))
            self.dead.update(node.output)
            return
        try:
            if node.domain not in ("", "ai.onnx"):
                raise Unsupported(f"custom domain '{node.domain}'")
            if node.op_type == "Constant":
                raise Unsupported("only dense numeric constants are supported")
            if all(i in self.consts for i in ins):
                self._fold(node)
            elif node.op_type == "Shape":
                self._shape_op(node)
            elif node.input[0] in self.acts and node.op_type in CONVERTERS:
                CONVERTERS[node.op_type](self, node)
            elif any(i in self.shapes for i in ins) and node.op_type in SHAPE_OPS:
                self._shape_op(node)
            elif any(i in self.shapes for i in ins):
                raise Unsupported("arithmetic on tensor shapes beyond Shape, Gather, Slice, Concat, "
                                  "Unsqueeze, Squeeze, Reshape and Cast is not supported")
            elif node.op_type in CONVERTERS:
                CONVERTERS[node.op_type](self, node)
            else:
                raise Unsupported("")
        except (Unsupported, IRValidationError) as e:
            self.problems.add(node.op_type, self._where(node), str(e))
            self.dead.update(node.output)

    def _where(self, node: onnx.NodeProto) -> str:
        meta = {p.key: p.value for p in node.metadata_props}
        origin = meta.get("namespace", "").lstrip(": ")
        if "AdaptiveAvgPool2d" in origin:
            self.problems.note("torch.onnx.export decomposes AdaptiveAvgPool2d into gathers when the input size "
                               "is not a multiple of the output size; make it a multiple, or compile the torch "
                               "model (or its .pt2) instead")
        return f"node '{node.name}'" + (f" (from torch: {origin})" if origin else "")

    def _fold(self, node: onnx.NodeProto) -> None:
        feeds = {i: self.consts[i] for i in node.input if i}
        try:
            results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:
            raise Unsupported(f"could not evaluate it on constants ({type(e).__name__}: {_first_line(e)})") from e
        for name, value in zip(node.output, results):
            if name:
                self.consts[name] = np.asarray(value)

    def _shape_op(self, node: onnx.NodeProto) -> None:
        """Shape arithmetic; a result without the symbolic batch N is an ordinary constant."""
        a = node_attrs(node)
        if node.op_type == "Shape":
            shape = self.specs[self.act(node.input[0])].shape
            vec = np.array([N if d is None else d for d in shape], dtype=object)
            vec = vec[a.get("start", 0):a.get("end", len(vec))]
        else:
            args = [self.shapes[i] if i in self.shapes else self.consts.get(i) for i in node.input]
            vec = SHAPE_OPS[node.op_type](self, args, a)
        if any(d is N for d in np.asarray(vec).ravel()):
            self.shapes[node.output[0]] = vec
        else:
            self.consts[node.output[0]] = np.asarray(vec).astype(np.int64)

    def _outputs(self) -> list[str]:
        names = []
        for o in self.graph.output:
            if o.name in self.acts:
                names.append(self.acts[o.name])
            elif o.name not in self.dead:
                self.problems.add(f"output '{o.name}'", "the graph outputs", "it does not depend on the input; "
                                  "every output must be computed from the input tensor")
        return names

    # ---- helpers for converters ----

    def act(self, name: str) -> str:
        """The IR value of ONNX value ``name``, which must be computed from the graph input."""
        if name in self.acts:
            return self.acts[name]
        raise Unsupported(f"input '{name}' must be computed from the graph input")

    def const(self, name: str, what: str) -> np.ndarray:
        """The compile-time array behind ``name`` (Unsupported if it depends on the input)."""
        if name in self.consts:
            return self.consts[name]
        raise Unsupported(f"the {what} '{name}' must be a constant (an initializer), not computed from the input")

    def value(self, name: str) -> str:
        """IR name of an input: an activation, or a constant emitted as a parameter."""
        if name in self.acts:
            return self.acts[name]
        if name in self.consts:
            value = self.consts[name]
            return self.param(name, clean(name), value.reshape(1) if value.ndim == 0 else value)
        raise Unsupported(f"input '{name}' is neither computed from the graph input nor a constant")

    def param(self, key: str, label: str, value: np.ndarray) -> str:
        """Emit ``value`` as a parameter named after ``label``, once per ``key``; return its name."""
        if key not in self.param_of:
            arr = np.asarray(value)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            self.param_of[key] = name = self.values(label)
            self.params[name] = arr
            self.specs[name] = ir.TensorSpec(arr.shape, str(arr.dtype))
        return self.param_of[key]

    def shape(self, name: str) -> tuple:
        """IR shape of activation ``name`` (batch None when dynamic)."""
        return self.specs[self.act(name)].shape

    def emit(self, cls: type[ir.Node], node: onnx.NodeProto, inputs: tuple[str, ...],
             onnx_out: str | None = None, suffix: str = "", **attrs: Any) -> str:
        """Append one IR node for ``node``; its value stands for ONNX value ``onnx_out`` (default: output 0)."""
        base = clean(node.name) if node.name else node.op_type
        name = self.node_names(base + suffix)
        target = node.output[0] if onnx_out is None else onnx_out
        out = self.values(clean(target) + suffix)
        ir_node = cls(name=name, inputs=inputs, output=out, **attrs)
        spec = ir_node.infer([self.specs[i] for i in inputs])
        batch = self.specs["input"].shape[0]
        if not spec.shape or spec.shape[0] != batch:
            raise BatchChange(f"its output {show_shape(spec.shape)} does not keep the batch dimension 0 of the "
                              f"input ({'N' if batch is None else batch}); edgert graphs compute each sample "
                              "on its own")
        self.specs[out] = spec
        self.nodes.append(ir_node)
        if not suffix:
            self.acts[target] = out
        return out

    def alias(self, node: onnx.NodeProto) -> None:
        """Make the node's output stand for its input (identity ops emit nothing)."""
        self.acts[node.output[0]] = self.act(node.input[0])

    def reshape_to(self, node: onnx.NodeProto, out_shape: tuple) -> None:
        """Emit Flatten/Reshape (or nothing) taking the node's input to ``out_shape``, batch kept."""
        x = self.act(node.input[0])
        made = reshape_node("", x, "", self.specs[x].shape, out_shape)
        if made is None:
            self.acts[node.output[0]] = x
        else:
            self.emit(type(made), node, made.inputs, **made.attrs())

    def used(self, name: str) -> bool:
        """Whether a needed node or a graph output reads ONNX value ``name``."""
        return bool(name) and (name in self.consumers or any(o.name == name for o in self.graph.output))


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a dense numeric Constant node; None for any other node."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(a.name)
    return None if dtype is None else np.array(helper.get_attribute_value(a), dtype=dtype)
