"""ONNX frontend: an .onnx file (or ModelProto) of a float CNN becomes an edgert Graph.

Only the ``onnx`` package is used. Nodes that feed no graph output are skipped; nodes whose inputs are
all constants are folded with ``onnx.reference``; shape arithmetic on the input's shape (Shape, Gather,
Concat ... feeding a Reshape, as exporters write ``x.view(x.size(0), -1)``) is evaluated with the batch
kept symbolic. Pooling follows PyTorch's rules (ceil_mode, count_include_pad), which is what the IR
defines and what torch.onnx.export means.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgert import ir
from edgert.compilers.frontends._common import (FLOAT32_MAX, Names, Problems, Unsupported, clean,
                                                rename_outputs, reshape_node)
from edgert.errors import EdgertError, IRValidationError

_FIX = ("Re-export without these ops (e.g. replace GELU with ReLU), or add a converter to CONVERTERS "
        "in edgert/compilers/frontends/onnx.py.")


def from_onnx(model: str | os.PathLike | onnx.ModelProto) -> ir.Graph:
    """Convert an ONNX float CNN with one input into a validated edgert Graph (input "input")."""
    return _Converter(_load(model)).run()


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


class _Batch:
    """The dynamic batch size inside shape arithmetic."""

    def __repr__(self) -> str:
        return "N"


N = _Batch()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _mul(dims: tuple) -> Any:
    """Product of dims; None (the batch) survives only when every other factor is 1."""
    k = math.prod(d for d in dims if d is not None)
    if None not in dims:
        return k
    return None if k == 1 else f"{k}*N"


class _Converter:
    """One walk over an ONNX graph, emitting IR nodes and collecting problems."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.graph = proto.graph
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
        for node in self.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.consts[node.output[0]] = _constant_value(node)
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        spec = self._input()
        needed = self._needed()
        for node in self.graph.node:
            if id(node) in needed and id(node) not in self.fused:
                self._node(node)
        outputs = self._outputs()
        self.problems.raise_if_any(list(CONVERTERS) + list(SHAPE_OPS) + ["Constant", "Shape"], _FIX)
        graph = rename_outputs(ir.Graph(inputs=(("input", spec),), nodes=tuple(self.nodes),
                                        outputs=tuple(outputs), params=self.params))
        return graph.validate()

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
        producer = {o: n for n in self.graph.node for o in n.output if o}
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
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return
        if any(i in self.dead for i in ins):
            self.dead.update(node.output)
            return
        try:
            if node.domain not in ("", "ai.onnx"):
                raise Unsupported(f"custom domain '{node.domain}'")
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
        origin = meta.get("namespace")
        where = f"node '{node.name}'" + (f" (from torch: {origin})" if origin else "")
        if "AdaptiveAvgPool2d" in (origin or ""):
            where += (" [torch.onnx.export decomposes AdaptiveAvgPool2d this way when the input size is not "
                      "a multiple of the output size; make it a multiple, or compile the torch model instead]")
        return where

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
        a = _attrs(node)
        if node.op_type == "Shape":
            shape = self.specs[self._act(node.input[0])].shape
            vec = np.array([N if d is None else d for d in shape], dtype=object)
            self.shapes[node.output[0]] = vec[a.get("start", 0):a.get("end", len(vec))]
            return
        args = [self.shapes[i] if i in self.shapes else self.consts.get(i) for i in node.input]
        self.shapes[node.output[0]] = SHAPE_OPS[node.op_type](self, args, a)

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

    def _act(self, name: str) -> str:
        if name in self.acts:
            return self.acts[name]
        raise Unsupported(f"input '{name}' must be computed from the graph input")

    def _const(self, name: str, what: str) -> np.ndarray:
        if name in self.consts:
            return self.consts[name]
        raise Unsupported(f"the {what} '{name}' must be a constant (an initializer), not computed from the input")

    def _in(self, name: str) -> str:
        """IR name of an input: an activation, or a constant emitted as a parameter."""
        if name in self.acts:
            return self.acts[name]
        if name in self.consts:
            value = self.consts[name]
            return self._param(name, clean(name), value.reshape(1) if value.ndim == 0 else value)
        raise Unsupported(f"input '{name}' is neither computed from the graph input nor a constant")

    def _param(self, key: str, label: str, value: np.ndarray) -> str:
        if key not in self.param_of:
            arr = np.asarray(value)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            self.param_of[key] = name = self.values(label)
            self.params[name] = arr
            self.specs[name] = ir.TensorSpec(arr.shape, str(arr.dtype))
        return self.param_of[key]

    def _shape_of(self, name: str) -> tuple:
        return self.specs[self._act(name)].shape

    def _emit(self, cls: type[ir.Node], node: onnx.NodeProto, inputs: tuple[str, ...], onnx_out: str | None = None,
              suffix: str = "", **attrs: Any) -> str:
        """Append one IR node for ``node``; its value stands for ONNX value ``onnx_out`` (default: output 0)."""
        base = clean(node.name) if node.name else node.op_type
        name = self.node_names(base + suffix)
        target = node.output[0] if onnx_out is None else onnx_out
        out = self.values(clean(target) + suffix)
        ir_node = cls(name=name, inputs=inputs, output=out, **attrs)
        self.specs[out] = ir_node.infer([self.specs[i] for i in inputs])
        self.nodes.append(ir_node)
        if not suffix:
            self.acts[target] = out
        return out

    def _alias(self, node: onnx.NodeProto) -> None:
        self.acts[node.output[0]] = self._act(node.input[0])

    def _reshape_to(self, node: onnx.NodeProto, out_shape: tuple) -> None:
        x = self._act(node.input[0])
        made = reshape_node("", x, "", self.specs[x].shape, out_shape)
        if made is None:
            self.acts[node.output[0]] = x
        else:
            self._emit(type(made), node, made.inputs, **made.attrs())

    def _used(self, name: str) -> bool:
        return bool(name) and (name in self.consumers or any(o.name == name for o in self.graph.output))


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    a = node.attribute[0]
    v = helper.get_attribute_value(a)
    if a.name in ("value", "sparse_value"):
        return numpy_helper.to_array(v) if a.name == "value" else numpy_helper.to_array(v.values)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(a.name)
    return np.array(v, dtype=dtype) if dtype else np.array(v)


# ---- shape arithmetic: int vectors that may hold the symbolic batch N ----

def _gather(c: _Converter, args: list, a: dict) -> np.ndarray:
    return np.take(args[0], np.asarray(args[1]).astype(np.int64), axis=a.get("axis", 0))


def _slice(c: _Converter, args: list, a: dict) -> np.ndarray:
    data = args[0]
    if c.opset < 10:
        starts, ends, axes = a["starts"], a["ends"], a.get("axes", [0])
        steps = [1] * len(starts)
    else:
        starts, ends = args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else [0]
        steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    if list(axes) not in ([0], [-1]) or data.ndim != 1:
        raise Unsupported("only 1-D slices of a shape vector are supported")
    return data[int(starts[0]):int(ends[0]):int(steps[0])]


def _concat(c: _Converter, args: list, a: dict) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=object).reshape(-1) for x in args])


def _unsqueeze(c: _Converter, args: list, a: dict) -> np.ndarray:
    axes = a["axes"] if "axes" in a else list(args[1])
    out = np.asarray(args[0], dtype=object)
    for ax in sorted(int(x) % (out.ndim + len(axes)) for x in axes):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(c: _Converter, args: list, a: dict) -> np.ndarray:
    axes = a.get("axes", list(args[1]) if len(args) > 1 and args[1] is not None else None)
    data = np.asarray(args[0], dtype=object)
    return np.squeeze(data, axis=None if axes is None else tuple(int(x) for x in axes))


def _reshape_vec(c: _Converter, args: list, a: dict) -> np.ndarray:
    if args[1] is None:
        raise Unsupported("a shape vector reshaped by a computed shape")
    return np.asarray(args[0], dtype=object).reshape([int(d) for d in args[1]])


def _same(c: _Converter, args: list, a: dict) -> np.ndarray:
    return args[0]


SHAPE_OPS: dict[str, Callable[[_Converter, list, dict], np.ndarray]] = {
    "Gather": _gather, "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Reshape": _reshape_vec, "Cast": _same, "Identity": _same}


# ---- converters: one function per ONNX op ----

def _window_pads(a: dict, in_hw: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> tuple:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``, as ONNX defines them."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise Unsupported(f"pads {p}: only 2-D windows (4 pad values) are supported")
        return tuple(p)
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={auto!r}; supported: NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _need_4d(c: _Converter, node: onnx.NodeProto) -> tuple:
    shape = c._shape_of(node.input[0])
    if len(shape) != 4:
        raise Unsupported(f"only 2-D (NCHW) inputs are supported, got shape {shape}")
    return shape


def _conv(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    shape = _need_4d(c, node)
    w = c._const(node.input[1], "weight")
    stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
    pads = _window_pads(a, shape[2:], w.shape[2:], stride, dilation)
    inputs = (c._act(node.input[0]), c._in(node.input[1]))
    if len(node.input) > 2 and node.input[2]:
        inputs += (c._in(node.input[2]),)
    c._emit(ir.Conv2d, node, inputs, stride=stride, padding=pads, dilation=dilation, groups=a.get("group", 1))


def _gemm(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    if a.get("transA", 0):
        raise Unsupported("transA=1 is not supported")
    if len(c._shape_of(node.input[0])) != 2:
        raise Unsupported(f"Gemm needs a 2-D input, got shape {c._shape_of(node.input[0])}")
    b = c._const(node.input[1], "B matrix")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    w = (b if a.get("transB", 0) else b.T) * np.float32(alpha)
    key = f"{node.input[1]}:{a.get('transB', 0)}:{alpha}"
    label = clean(node.input[1]) + ("" if a.get("transB", 0) else ".T") + ("" if alpha == 1 else ".scaled")
    inputs = (c._act(node.input[0]), c._param(key, label, np.ascontiguousarray(w)))
    if len(node.input) > 2 and node.input[2]:
        bias = c._const(node.input[2], "C bias") * np.float32(beta)
        out_features = w.shape[0]
        if bias.size == 1:
            bias = np.full(out_features, bias.reshape(()), np.float32)
        elif bias.shape not in ((out_features,), (1, out_features)):
            raise Unsupported(f"C has shape {bias.shape}; a bias of ({out_features},) or (1, {out_features}) "
                              "is supported")
        inputs += (c._param(f"{node.input[2]}:{beta}", clean(node.input[2]), bias.reshape(-1)),)
    c._emit(ir.Linear, node, inputs)


def _matmul(c: _Converter, node: onnx.NodeProto) -> None:
    b = c._const(node.input[1], "second operand")
    if b.ndim != 2:
        raise Unsupported(f"the constant operand has shape {b.shape}; only 2-D weights are supported")
    inputs = (c._act(node.input[0]), c._param(node.input[1] + ":T", clean(node.input[1]) + ".T",
                                              np.ascontiguousarray(b.T)))
    users = c.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add" and all(o.name != node.output[0] for o in c.graph.output):
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        bias = c.consts.get(other)
        if bias is not None and bias.shape in ((b.shape[1],), (1, b.shape[1])):
            inputs += (c._param(other, clean(other), bias.reshape(-1)),)
            c.fused.add(id(add))
            c._emit(ir.Linear, node, inputs, onnx_out=add.output[0])
            return
    c._emit(ir.Linear, node, inputs)


def _batch_norm(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    if a.get("training_mode", 0) or a.get("spatial", 1) == 0 or any(c._used(o) for o in node.output[1:]):
        raise Unsupported("only inference-mode batch normalization (one output, spatial) is supported")
    for i, what in zip(node.input[1:], ("scale", "bias", "mean", "var")):
        c._const(i, what)
    c._emit(ir.BatchNorm, node, (c._act(node.input[0]),) + tuple(c._in(i) for i in node.input[1:5]),
            eps=float(a.get("epsilon", 1e-5)))


def _unary(cls: type[ir.Node]) -> Callable[[_Converter, onnx.NodeProto], None]:
    def convert(c: _Converter, node: onnx.NodeProto) -> None:
        c._emit(cls, node, (c._act(node.input[0]),))
    return convert


def _scalar(c: _Converter, node: onnx.NodeProto, i: int, default: float) -> float:
    if len(node.input) <= i or not node.input[i]:
        return default
    v = c._const(node.input[i], "bound")
    if v.size != 1:
        raise Unsupported(f"bound '{node.input[i]}' has shape {v.shape}; a scalar is needed")
    return float(v.reshape(()))


def _clip(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    if c.opset < 11:
        lo, hi = float(a.get("min", -FLOAT32_MAX)), float(a.get("max", FLOAT32_MAX))
    else:
        lo, hi = _scalar(c, node, 1, -FLOAT32_MAX), _scalar(c, node, 2, FLOAT32_MAX)
    c._emit(ir.Clip, node, (c._act(node.input[0]),), lo=max(lo, -FLOAT32_MAX), hi=min(hi, FLOAT32_MAX))


def _min_max(c: _Converter, node: onnx.NodeProto) -> None:
    """Max(x, k) and Min(x, k) with a scalar constant k are one-sided clips."""
    if len(node.input) != 2:
        raise Unsupported("only Min/Max of a tensor and one scalar constant is supported")
    x, k = (node.input[0], node.input[1]) if node.input[0] in c.acts else (node.input[1], node.input[0])
    v = c._const(k, "operand")
    if v.size != 1:
        raise Unsupported(f"operand '{k}' has shape {v.shape}; only a scalar constant is supported")
    bound = float(v.reshape(()))
    lo, hi = (bound, FLOAT32_MAX) if node.op_type == "Max" else (-FLOAT32_MAX, bound)
    c._emit(ir.Clip, node, (c._act(x),), lo=lo, hi=hi)


def _pool(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    shape = _need_4d(c, node)
    kernel = tuple(a["kernel_shape"])
    stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
    pads = _window_pads(a, shape[2:], kernel, stride, dilation)
    x = (c._act(node.input[0]),)
    if node.op_type == "MaxPool":
        if any(c._used(o) for o in node.output[1:]):
            raise Unsupported("the Indices output is not supported")
        c._emit(ir.MaxPool2d, node, x, kernel=kernel, stride=stride, padding=pads, dilation=dilation,
                ceil_mode=bool(a.get("ceil_mode", 0)))
        return
    if dilation != (1, 1):
        raise Unsupported(f"dilations {dilation} in average pooling are not supported")
    c._emit(ir.AvgPool2d, node, x, kernel=kernel, stride=stride, padding=pads,
            ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))


def _global_pool(c: _Converter, node: onnx.NodeProto) -> None:
    shape = _need_4d(c, node)
    if node.op_type == "GlobalAveragePool":
        c._emit(ir.AdaptiveAvgPool2d, node, (c._act(node.input[0]),), output_size=(1, 1))
    else:
        c._emit(ir.MaxPool2d, node, (c._act(node.input[0]),), kernel=shape[2:], stride=(1, 1))


def _reduce_mean(c: _Converter, node: onnx.NodeProto) -> None:
    a = _attrs(node)
    shape = c._shape_of(node.input[0])
    if "axes" in a:
        axes = a["axes"]
    elif len(node.input) > 1 and node.input[1]:
        axes = c._const(node.input[1], "axes").tolist()
    else:
        axes = [] if a.get("noop_with_empty_axes", 0) else list(range(len(shape)))
    if len(shape) != 4 or sorted(int(x) % 4 for x in axes) != [2, 3]:
        raise Unsupported(f"ReduceMean over axes {axes} of shape {shape}; edgert supports the mean over H and "
                          "W (axes 2, 3) of an NCHW tensor, i.e. global average pooling")
    x = (c._act(node.input[0]),)
    if a.get("keepdims", 1):
        c._emit(ir.AdaptiveAvgPool2d, node, x, output_size=(1, 1))
    else:
        pooled = c._emit(ir.AdaptiveAvgPool2d, node, x, suffix="_pool", output_size=(1, 1))
        c._emit(ir.Flatten, node, (pooled,), start_dim=1)


def _flatten(c: _Converter, node: onnx.NodeProto) -> None:
    shape = c._shape_of(node.input[0])
    axis = _attrs(node).get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    c._reshape_to(node, (_mul(shape[:axis]), _mul(shape[axis:])))


def _reshape(c: _Converter, node: onnx.NodeProto) -> None:
    shape = c._shape_of(node.input[0])
    if node.input[1] in c.shapes:
        target = list(c.shapes[node.input[1]])
    else:
        target = c._const(node.input[1], "shape").tolist()
    allowzero = _attrs(node).get("allowzero", 0)
    dims: list[Any] = []
    for i, d in enumerate(target):
        if d is N:
            dims.append(None)
        elif int(d) == 0 and not allowzero:
            if i >= len(shape):
                raise Unsupported(f"shape {target} copies dimension {i} of a rank-{len(shape)} input")
            dims.append(shape[i])
        else:
            dims.append(int(d))
    if dims.count(-1) > 1:
        raise Unsupported(f"shape {target} has more than one -1")
    if -1 in dims:
        i = dims.index(-1)
        known = math.prod(d for j, d in enumerate(dims) if j != i and d is not None)
        per_sample = math.prod(shape[1:])
        if i == 0 and shape[0] is None:
            dims[0] = None if known == per_sample else f"{per_sample}*N/{known}"
        elif shape[0] is None and dims[0] is None:
            dims[i] = per_sample // known
        elif shape[0] is None:
            dims[i] = f"{per_sample}*N/{known}"
        else:
            dims[i] = shape[0] * per_sample // known
    c._reshape_to(node, tuple(dims))


def _squeeze_unsqueeze(c: _Converter, node: onnx.NodeProto) -> None:
    shape = list(c._shape_of(node.input[0]))
    a = _attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = c._const(node.input[1], "axes").tolist()
    if node.op_type == "Unsqueeze":
        rank = len(shape) + len(axes)
        for ax in sorted(int(x) % rank for x in axes):
            shape.insert(ax, 1)
    else:
        drop = {int(x) % len(shape) for x in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
        shape = [d for i, d in enumerate(shape) if i not in drop]
    c._reshape_to(node, tuple(shape))


def _add(c: _Converter, node: onnx.NodeProto) -> None:
    c._emit(ir.Add, node, (c._in(node.input[0]), c._in(node.input[1])))


def _concat(c: _Converter, node: onnx.NodeProto) -> None:
    rank = len(c._shape_of(next(i for i in node.input if i in c.acts)))
    axis = _attrs(node)["axis"] % rank
    if axis == 0:
        raise Unsupported("concatenation along the batch axis 0; join along a feature axis (>= 1)")
    c._emit(ir.Concat, node, tuple(c._in(i) for i in node.input if i), axis=axis)


def _softmax(c: _Converter, node: onnx.NodeProto) -> None:
    shape = c._shape_of(node.input[0])
    axis = _attrs(node).get("axis", 1 if c.opset < 13 else -1) % len(shape)
    if axis == 0:
        raise Unsupported("softmax over the batch axis 0; use a feature axis (>= 1)")
    if c.opset < 13 and any(d != 1 for d in shape[axis + 1:]):
        raise Unsupported(f"opset {c.opset} Softmax normalizes over all axes from {axis} on, shape {shape}; "
                          "export with opset >= 13")
    c._emit(ir.Softmax, node, (c._act(node.input[0]),), axis=axis)


def _dropout(c: _Converter, node: onnx.NodeProto) -> None:
    if len(node.input) > 2 and node.input[2] and bool(c._const(node.input[2], "training_mode")):
        raise Unsupported("dropout in training mode; export the model in eval mode")
    if any(c._used(o) for o in node.output[1:]):
        raise Unsupported("the dropout mask output is not supported")
    c._alias(node)


def _cast(c: _Converter, node: onnx.NodeProto) -> None:
    if _attrs(node).get("to") != onnx.TensorProto.FLOAT:
        raise Unsupported("casts away from float32 are not supported; edgert graphs compute in float32")
    c._alias(node)


def _cast_like(c: _Converter, node: onnx.NodeProto) -> None:
    """CastLike(v, x) with x computed from the input: x is float32, so v becomes (or stays) float32."""
    if node.input[0] in c.consts:
        c.consts[node.output[0]] = c.consts[node.input[0]].astype(np.float32)
    else:
        c._alias(node)


CONVERTERS: dict[str, Callable[[_Converter, onnx.NodeProto], None]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Relu": _unary(ir.Relu), "Sigmoid": _unary(ir.Sigmoid), "Tanh": _unary(ir.Tanh), "Clip": _clip,
    "Max": _min_max, "Min": _min_max, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "ReduceMean": _reduce_mean,
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze_unsqueeze, "Unsqueeze": _squeeze_unsqueeze,
    "Add": _add, "Concat": _concat, "Softmax": _softmax, "Identity": lambda c, n: c._alias(n),
    "Dropout": _dropout, "Cast": _cast, "CastLike": _cast_like,
}
