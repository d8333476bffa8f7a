"""PyTorch frontend: an nn.Module or a saved .pt2 ExportedProgram becomes an edgert Graph.

The model goes through ``torch.export.export`` with a dynamic batch dimension; the exported graph is
kept at the level torch.export produces (``aten.conv2d``, ``aten.batch_norm``, ``aten.linear`` ...),
because those ops map one-to-one onto edgert's IR. Core-ATen graphs (``run_decompositions`` output,
e.g. ``aten.convolution``, ``aten.addmm``) are read as well. Arithmetic on constants only is folded
with torch; anything else without a converter is reported, all at once, in one UnsupportedOpError.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.experimental.symbolic_shapes import statically_known_true

from edgert import ir
from edgert.compilers.frontends._common import (FLOAT32_MAX, Names, Problems, Unsupported, rename_outputs,
                                                reshape_node)
from edgert.errors import EdgertError, InternalError, IRValidationError

aten = torch.ops.aten
Example = np.ndarray | torch.Tensor | tuple[int, ...] | list[int]

_FIX = ("Replace these layers with supported ones (e.g. nn.GELU -> nn.ReLU), or add a converter to "
        "CONVERTERS in edgert/compilers/frontends/torch.py.")


def from_torch(model_or_path: nn.Module | ExportedProgram | str | os.PathLike,
               example_input: Example | None = None) -> ir.Graph:
    """Convert a float CNN (module, ExportedProgram or .pt2 path) into a validated edgert Graph.

    ``example_input`` is needed for a module: an array or tensor of the input's full shape (batch
    first), or just that shape as a tuple. The graph input is named "input"; its batch dimension is
    ``None`` unless the model only exports with a fixed batch.
    """
    return _Converter(export_program(model_or_path, example_input)).run()


def export_program(model_or_path: nn.Module | ExportedProgram | str | os.PathLike,
                   example_input: Example | None = None) -> ExportedProgram:
    """The ExportedProgram for a module (exported, dynamic batch if possible), an EP, or a .pt2 path."""
    if isinstance(model_or_path, ExportedProgram):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return _load_pt2(Path(model_or_path))
    if isinstance(model_or_path, nn.Module):
        if example_input is None:
            raise EdgertError("from_torch needs example_input for an nn.Module: an input tensor or its "
                              "shape, batch first, e.g. from_torch(model, (1, 3, 32, 32))")
        return _export_module(model_or_path, _example_tensor(example_input))
    raise EdgertError(f"from_torch takes an nn.Module, a torch.export.ExportedProgram or the path of a "
                      f".pt2 file; got {type(model_or_path).__name__}")


def _load_pt2(path: Path) -> ExportedProgram:
    if path.suffix != ".pt2":
        raise EdgertError(
            f"{path}: from_torch reads .pt2 files saved with torch.export.save(ep, 'model.pt2'). For an "
            ".onnx file use from_onnx; for a state_dict (.pt/.pth) build the nn.Module, load the weights "
            "and pass the module")
    if not path.is_file():
        raise EdgertError(f"{path}: no such file")
    try:
        return torch.export.load(path)
    except Exception as e:  # torch raises many kinds here (zipfile, pickle, KeyError ...)
        raise EdgertError(f"{path} is not a readable ExportedProgram ({type(e).__name__}: {_first_line(e)}); "
                          "save it again with torch.export.save from this torch version") from e


def _example_tensor(example: Example) -> torch.Tensor:
    if isinstance(example, (tuple, list)) and all(isinstance(d, int) for d in example):
        x = torch.from_numpy(np.random.default_rng(0).standard_normal(tuple(example)).astype(np.float32))
    elif isinstance(example, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    elif isinstance(example, torch.Tensor):
        x = example.detach().to(torch.float32)
    else:
        raise EdgertError(f"example_input must be an array, a tensor or a shape tuple, got "
                          f"{type(example).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise EdgertError(f"example_input has shape {tuple(x.shape)}; give the batch dimension first, "
                          "e.g. (1, 3, 32, 32)")
    return x


def _export_module(model: nn.Module, x: torch.Tensor) -> ExportedProgram:
    """Export with dim 0 dynamic (from a batch of at least 2: torch specializes 1); else with x's batch."""
    model.eval()
    x2 = x if x.shape[0] >= 2 else torch.cat([x, x])
    try:
        return torch.export.export(model, (x2,), dynamic_shapes=({0: Dim("batch")},))
    except Exception as dynamic_error:
        reason = _first_line(dynamic_error)
    try:
        ep = torch.export.export(model, (x,))
    except Exception as e:
        raise EdgertError(
            f"torch.export could not trace the model ({type(e).__name__}: {_first_line(e)}). Make "
            "forward() traceable: no Python control flow on tensor values, no .item()/.numpy()/.tolist(), "
            "tensors in and out") from e
    warnings.warn(f"from_torch: exported with a fixed batch of {x.shape[0]}; a dynamic batch failed: {reason}",
                  stacklevel=3)
    return ep


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _two(v: Any) -> tuple[int, int]:
    """An int, a 1-list or a pair as an (h, w) pair."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(d) for d in v)
    return (v[0], v[0]) if len(v) == 1 else v  # type: ignore[return-value]


def _args(n: fx.Node) -> dict[str, Any]:
    """Arguments of an aten call by schema name, defaults filled in."""
    out: dict[str, Any] = {}
    for i, a in enumerate(n.target._schema.arguments):  # type: ignore[union-attr]
        if i < len(n.args):
            out[a.name] = n.args[i]
        elif a.name in n.kwargs:
            out[a.name] = n.kwargs[a.name]
        else:
            out[a.name] = a.default_value if a.has_default_value() else None
    return out


def _target_name(target: Any) -> str:
    return str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))


def _where(n: fx.Node) -> str:
    """Module path, class and user source line of an FX node, as far as export recorded them."""
    parts = []
    stack = n.meta.get("nn_module_stack")
    if stack:
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
        cls = cls.rsplit(".", 1)[-1]
        parts.append(f"module '{path}' ({cls})" if path else f"the top-level forward ({cls})")
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', n.meta.get("stack_trace") or "")
    if frames:
        torch_dir = os.path.dirname(torch.__file__)
        user = [f for f in frames if not f[0].startswith(torch_dir)] or frames
        file, line, code = user[-1]
        parts.append(f"{file}:{line} `{code.strip()}`")
    return ", ".join(parts) or f"graph node {n.name}"


class _Converter:
    """One walk over an ExportedProgram's FX graph, emitting IR nodes and collecting problems."""

    def __init__(self, ep: ExportedProgram) -> None:
        self.ep = ep
        self.nodes: list[ir.Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.values = Names(("input", "output"))
        self.node_names = Names()
        self.acts: dict[str, str] = {}  # fx name -> IR value computed from the input
        self.consts: dict[str, Any] = {}  # fx name -> tensor (or tuple) known at compile time
        self.labels: dict[str, str] = {}  # fx name of a constant -> readable parameter name
        self.param_of: dict[str, str] = {}  # cache key -> parameter name already emitted
        self.tuples: dict[str, tuple[str | None, ...]] = {}  # fx name -> IR values of a tuple result
        self.dead: set[str] = set()  # fx names downstream of a problem
        self.problems = Problems("from_torch")
        self.batch: Any = None  # the input's dim 0: a SymInt when dynamic, else an int
        self.input_spec: ir.TensorSpec | None = None

    def run(self) -> ir.Graph:
        kinds = {s.arg.name: s for s in self.ep.graph_signature.input_specs}
        user_outputs = [s.arg.name for s in self.ep.graph_signature.output_specs
                        if s.kind == OutputKind.USER_OUTPUT]
        outputs: list[str] = []
        for n in self.ep.graph.nodes:
            if n.op == "placeholder":
                self._placeholder(n, kinds[n.name])
            elif n.op == "call_function":
                self._call(n)
            elif n.op == "output":
                outputs = self._outputs(n, user_outputs)
            else:
                self.problems.add(f"{n.op} {n.target}", _where(n), "only aten calls are supported")
        if self.input_spec is None:
            raise EdgertError("from_torch: the model takes no tensor input; edgert compiles models with "
                              "exactly one input tensor")
        self.problems.raise_if_any([_target_name(t) for t in CONVERTERS], _FIX)
        graph = rename_outputs(ir.Graph(inputs=(("input", self.input_spec),), nodes=tuple(self.nodes),
                                         outputs=tuple(outputs), params=self.params))
        self._check_shapes(graph, outputs)
        return graph

    # ---- graph walk ----

    def _placeholder(self, n: fx.Node, spec: Any) -> None:
        if spec.kind == InputKind.USER_INPUT:
            val = n.meta.get("val")
            if self.input_spec is not None or not isinstance(val, torch.Tensor):
                raise EdgertError(f"from_torch: input '{n.name}' is a second input or not a tensor; edgert "
                                  "compiles models with exactly one input tensor")
            if val.dtype != torch.float32:
                raise EdgertError(f"from_torch: the input is {val.dtype}; edgert compiles float32 models")
            self.batch = val.shape[0]
            shape = self._dims(val)
            if any(not isinstance(d, int) for d in shape[1:]):
                raise EdgertError(f"from_torch: input shape {shape} has a dynamic dimension other than the "
                                  "batch; export with only dim 0 dynamic")
            self.input_spec = ir.TensorSpec(shape)
            self.acts[n.name] = "input"
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = self.ep.state_dict.get(spec.target)
            self.consts[n.name] = t if t is not None else self.ep.constants[spec.target]
            self.labels[n.name] = spec.target
        elif spec.kind == InputKind.TOKEN:
            self.consts[n.name] = None
        else:
            self.problems.add(f"{spec.kind.name} input '{spec.target}'", _where(n),
                              "custom objects cannot be compiled")
            self.dead.add(n.name)

    def _call(self, n: fx.Node) -> None:
        ins = n.all_input_nodes
        if any(i.name in self.dead for i in ins):
            self.dead.add(n.name)
            return
        if all(i.name in self.consts for i in ins) and _foldable(n.target):
            self._fold(n)
            return
        if n.target.__name__ == "getitem" and ins[0].name in self.tuples:
            self._getitem(n)
            return
        val = n.meta.get("val")
        if not (isinstance(val, torch.Tensor)
                or (isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val))):
            return  # shape arithmetic (sym_size, ...) and runtime assertions: nothing to compute
        convert = CONVERTERS.get(n.target)
        try:
            if convert is None:
                raise Unsupported("")
            convert(self, n)
        except (Unsupported, IRValidationError) as e:
            self.problems.add(_target_name(n.target), _where(n), str(e))
            self.dead.add(n.name)

    def _fold(self, n: fx.Node) -> None:
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: self.consts[a.name])
        with torch.no_grad():
            self.consts[n.name] = n.target(*args, **kwargs)
        first = next((i for i in n.all_input_nodes if i.name in self.labels), None)
        op = _target_name(n.target).split(".")[1] if "." in _target_name(n.target) else n.name
        self.labels[n.name] = f"{self.labels[first.name]}.{op}" if first is not None else n.name

    def _getitem(self, n: fx.Node) -> None:
        value = self.tuples[n.args[0].name][n.args[1]]
        if value is None:
            self.problems.add(f"output {n.args[1]} of {_target_name(n.args[0].target)}", _where(n),
                              "only the first output (the result itself) is supported")
            self.dead.add(n.name)
        else:
            self.acts[n.name] = value

    def _outputs(self, n: fx.Node, user_outputs: list[str]) -> list[str]:
        names = []
        for a in n.args[0]:
            if not isinstance(a, fx.Node) or a.name not in user_outputs:
                continue
            if a.name in self.acts:
                names.append(self.acts[a.name])
            elif a.name not in self.dead:
                self.problems.add(f"output '{a.name}'", _where(a), "it does not depend on the input; "
                                  "every output must be computed from the input tensor")
        return names

    def _check_shapes(self, graph: ir.Graph, outputs: list[str]) -> None:
        """Every IR value's inferred shape must be the shape torch recorded: a converter bug otherwise."""
        specs = graph.infer_specs()
        renamed = dict(zip(outputs, graph.outputs))
        for n in self.ep.graph.nodes:
            if n.name in self.acts:
                got = specs[renamed.get(self.acts[n.name], self.acts[n.name])].shape
                want = self._dims(n.meta["val"])
                if got != want:
                    raise InternalError(f"from_torch: {n.name} ({_target_name(n.target)}) came out with shape "
                                        f"{got}, but torch computes {want}")

    # ---- helpers for converters ----

    def _dims(self, val: torch.Tensor) -> tuple:
        """Shape with the dynamic batch as None; other symbolic sizes as text (e.g. '48*N')."""
        out: list[Any] = []
        for d in val.shape:
            if isinstance(d, int):
                out.append(d)
            elif isinstance(self.batch, torch.SymInt) and statically_known_true(d == self.batch):
                out.append(None)
            else:
                out.append(str(d).replace(str(self.batch), "N") if isinstance(self.batch, torch.SymInt) else str(d))
        return tuple(out)

    def _shape(self, a: fx.Node) -> tuple:
        return self._dims(a.meta["val"])

    def _in(self, a: Any) -> str:
        """The IR name of an argument: an activation, or a constant emitted as a parameter."""
        if isinstance(a, fx.Node) and a.name in self.acts:
            return self.acts[a.name]
        if isinstance(a, fx.Node) and isinstance(self.consts.get(a.name), torch.Tensor):
            return self._param(a.name, self.labels[a.name], self.consts[a.name])
        raise Unsupported(f"argument {a!r} is neither a tensor computed from the input nor a constant tensor")

    def _const(self, a: Any, what: str) -> torch.Tensor:
        if isinstance(a, fx.Node) and isinstance(self.consts.get(a.name), torch.Tensor):
            return self.consts[a.name]
        raise Unsupported(f"the {what} must be a constant (a parameter or buffer), not computed from the input")

    def _param(self, key: str, label: str, t: torch.Tensor | np.ndarray) -> str:
        if key not in self.param_of:
            arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            self.param_of[key] = name = self.values(label)
            self.params[name] = arr
        return self.param_of[key]

    def _out(self, n: fx.Node, suffix: str = "") -> str:
        name = self.values(n.name + suffix)
        if not suffix:
            self.acts[n.name] = name
        return name

    def _emit(self, cls: type[ir.Node], n: fx.Node, inputs: tuple[str, ...], out: str | None = None,
              suffix: str = "", **attrs: Any) -> str:
        stack = n.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""
        name = self.node_names(f"{path}.{n.name}{suffix}" if path else f"{n.name}{suffix}")
        out = out or self._out(n)
        self.nodes.append(cls(name=name, inputs=inputs, output=out, **attrs))
        return out

    def _alias(self, n: fx.Node, a: fx.Node) -> None:
        if a.name in self.acts:
            self.acts[n.name] = self.acts[a.name]
        else:
            self.consts[n.name], self.labels[n.name] = self.consts[a.name], self.labels[a.name]


def _foldable(target: Any) -> bool:
    if getattr(target, "__name__", "") == "getitem":
        return True
    return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded not in target.tags


# ---- converters: one function per aten op family ----

def _conv(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("transposed"):
        raise Unsupported("transposed convolution is not supported")
    if len(c._shape(a["input"])) != 4:
        raise Unsupported(f"only 2-D convolution on NCHW input is supported, got input {c._shape(a['input'])}")
    w = c._const(a["weight"], "convolution weight")
    dilation = _two(a["dilation"])
    padding = a["padding"]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, w.shape[2:])]
        padding = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    inputs = (c._in(a["input"]), c._in(a["weight"])) + ((c._in(a["bias"]),) if a["bias"] is not None else ())
    c._emit(ir.Conv2d, n, inputs, stride=_two(a["stride"]),
            padding=padding if len(padding) == 4 else _two(padding), dilation=dilation, groups=int(a["groups"]))


def _linear(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    c._const(a["weight"], "linear weight")
    inputs = (c._in(a["input"]), c._in(a["weight"])) + ((c._in(a["bias"]),) if a["bias"] is not None else ())
    c._emit(ir.Linear, n, inputs)


def _transposed(c: _Converter, a: fx.Node) -> str:
    """A constant [K, O] matrix as the parameter [O, K] that Linear wants (the source's name if it was W.T)."""
    w = c._const(a, "matrix multiplied with")
    if w.dim() != 2:
        raise Unsupported(f"the constant operand has shape {tuple(w.shape)}; only 2-D weights are supported")
    label = c.labels[a.name]
    label = re.sub(r"\.(permute|t|transpose)$", "", label) if label.rsplit(".", 1)[-1] in (
        "permute", "t", "transpose") else f"{label}.T"
    return c._param(a.name + ".T", label, w.T.contiguous())


def _addmm(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a["beta"] != 1 or a["alpha"] != 1:
        raise Unsupported(f"addmm with beta={a['beta']}, alpha={a['alpha']}; only 1 is supported")
    w = _transposed(c, a["mat2"])
    bias = c._const(a["self"], "addmm bias")
    if bias.numel() != c.params[w].shape[0]:
        raise Unsupported(f"the bias has shape {tuple(bias.shape)}; a vector of {c.params[w].shape[0]} is needed")
    b = c._param(a["self"].name + ".vec", c.labels[a["self"].name], bias.reshape(-1))
    c._emit(ir.Linear, n, (c._in(a["mat1"]), w, b))


def _matmul(c: _Converter, n: fx.Node) -> None:
    x, other = n.args[0], n.args[1]
    c._emit(ir.Linear, n, (c._in(x), _transposed(c, other)))


def _batch_norm(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("training"):
        raise Unsupported("batch norm in training mode; call model.eval() before exporting")
    if a["running_mean"] is None or a["running_var"] is None:
        raise Unsupported("batch norm without running statistics (track_running_stats=False) normalizes "
                          "with batch statistics; train with track_running_stats=True")
    channels = c._shape(a["input"])[1]
    gamma = c._in(a["weight"]) if a["weight"] is not None else c._param(n.name + ".w", f"{n.name}.weight",
                                                                          np.ones(channels, np.float32))
    beta = c._in(a["bias"]) if a["bias"] is not None else c._param(n.name + ".b", f"{n.name}.bias",
                                                                    np.zeros(channels, np.float32))
    inputs = (c._in(a["input"]), gamma, beta, c._in(a["running_mean"]), c._in(a["running_var"]))
    if n.target == aten._native_batch_norm_legit_no_training.default:
        out = c._emit(ir.BatchNorm, n, inputs, out=c.values(n.name), eps=float(a["eps"]))
        c.tuples[n.name] = (out, None, None)
    else:
        c._emit(ir.BatchNorm, n, inputs, eps=float(a["eps"]))


def _unary(cls: type[ir.Node], **attrs: Any) -> Callable[[_Converter, fx.Node], None]:
    def convert(c: _Converter, n: fx.Node) -> None:
        c._emit(cls, n, (c._in(n.args[0]),), **attrs)
    return convert


def _hardtanh(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    c._emit(ir.Clip, n, (c._in(a["self"]),), lo=float(a["min_val"]), hi=float(a["max_val"]))


def _clamp(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    lo, hi = a.get("min"), a.get("max")
    c._emit(ir.Clip, n, (c._in(a["self"]),), lo=-FLOAT32_MAX if lo is None else float(lo),
            hi=FLOAT32_MAX if hi is None else float(hi))


def _max_pool(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    kernel = _two(a["kernel_size"])
    out = c._emit(ir.MaxPool2d, n, (c._in(a["self"]),), out=c.values(n.name), kernel=kernel,
                  stride=_two(a["stride"]) if a["stride"] else kernel, padding=_two(a["padding"]),
                  dilation=_two(a["dilation"]), ceil_mode=bool(a["ceil_mode"]))
    if n.target == aten.max_pool2d_with_indices.default:
        c.tuples[n.name] = (out, None)
    else:
        c.acts[n.name] = out


def _avg_pool(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a["divisor_override"] is not None:
        raise Unsupported(f"divisor_override={a['divisor_override']} is not supported")
    kernel = _two(a["kernel_size"])
    c._emit(ir.AvgPool2d, n, (c._in(a["self"]),), kernel=kernel,
            stride=_two(a["stride"]) if a["stride"] else kernel, padding=_two(a["padding"]),
            ceil_mode=bool(a["ceil_mode"]), count_include_pad=bool(a["count_include_pad"]))


def _adaptive_avg_pool(c: _Converter, n: fx.Node) -> None:
    out_hw = c._shape(n)[2:]
    c._emit(ir.AdaptiveAvgPool2d, n, (c._in(n.args[0]),), output_size=out_hw)


def _mean(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    shape = c._shape(a["self"])
    dims = sorted(d % len(shape) for d in (a["dim"] or ()))
    if len(shape) != 4 or dims != [2, 3]:
        raise Unsupported(f"mean over dims {a['dim']} of shape {shape}; edgert supports the mean over H and W "
                          "(dims (2, 3)) of an NCHW tensor, i.e. global average pooling")
    if a["keepdim"]:
        c._emit(ir.AdaptiveAvgPool2d, n, (c._in(a["self"]),), output_size=(1, 1))
        return
    pooled = c._emit(ir.AdaptiveAvgPool2d, n, (c._in(a["self"]),), out=c._out(n, "_pool"), suffix="_pool",
                     output_size=(1, 1))
    c._emit(ir.Flatten, n, (pooled,), start_dim=1)


def _reshape(c: _Converter, n: fx.Node) -> None:
    x = n.args[0]
    node = reshape_node("", c._in(x), "", c._shape(x), c._shape(n))
    if node is None:
        c._alias(n, x)
    else:
        c._emit(type(node), n, node.inputs, **node.attrs())


def _add(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a["alpha"] != 1:
        raise Unsupported(f"add with alpha={a['alpha']}; edgert supports alpha=1 (a plain a + b)")
    other = a["other"]
    if isinstance(other, (int, float)):
        b = c._param(n.name + ".other", f"{n.name}.other", np.array([other], np.float32))
    else:
        b = c._in(other)
    c._emit(ir.Add, n, (c._in(a["self"]), b))


def _cat(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    rank = len(c._shape(a["tensors"][0]))
    axis = a["dim"] % rank
    if axis == 0:
        raise Unsupported("concatenation along the batch axis 0; join along a feature axis (dim >= 1)")
    c._emit(ir.Concat, n, tuple(c._in(t) for t in a["tensors"]), axis=axis)


def _softmax(c: _Converter, n: fx.Node) -> None:
    axis = n.args[1] % len(c._shape(n.args[0]))
    if axis == 0:
        raise Unsupported("softmax over the batch axis 0; use a feature axis (dim >= 1)")
    c._emit(ir.Softmax, n, (c._in(n.args[0]),), axis=axis)


def _identity(c: _Converter, n: fx.Node) -> None:
    a = _args(n)
    if a.get("train"):
        raise Unsupported("dropout in training mode; call model.eval() before exporting")
    dtype = a.get("dtype")
    if dtype is not None and dtype != torch.float32:
        raise Unsupported(f"conversion to {dtype}; edgert graphs compute in float32")
    c._alias(n, n.args[0])


CONVERTERS: dict[Any, Callable[[_Converter, fx.Node], None]] = {
    aten.conv2d.default: _conv,
    aten.conv2d.padding: _conv,
    aten.convolution.default: _conv,
    aten.linear.default: _linear,
    aten.addmm.default: _addmm,
    aten.mm.default: _matmul,
    aten.matmul.default: _matmul,
    aten.batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.relu.default: _unary(ir.Relu),
    aten.relu_.default: _unary(ir.Relu),
    aten.relu6.default: _unary(ir.Clip, lo=0.0, hi=6.0),
    aten.hardtanh.default: _hardtanh,
    aten.hardtanh_.default: _hardtanh,
    aten.clamp.default: _clamp,
    aten.sigmoid.default: _unary(ir.Sigmoid),
    aten.sigmoid_.default: _unary(ir.Sigmoid),
    aten.tanh.default: _unary(ir.Tanh),
    aten.tanh_.default: _unary(ir.Tanh),
    aten.max_pool2d.default: _max_pool,
    aten.max_pool2d_with_indices.default: _max_pool,
    aten.avg_pool2d.default: _avg_pool,
    aten.adaptive_avg_pool2d.default: _adaptive_avg_pool,
    aten._adaptive_avg_pool2d.default: _adaptive_avg_pool,
    aten.mean.dim: _mean,
    aten.flatten.using_ints: _reshape,
    aten.view.default: _reshape,
    aten.reshape.default: _reshape,
    aten._unsafe_view.default: _reshape,
    aten.squeeze.dim: _reshape,
    aten.squeeze.dims: _reshape,
    aten.unsqueeze.default: _reshape,
    aten.add.Tensor: _add,
    aten.add_.Tensor: _add,
    aten.add.Scalar: _add,
    aten.cat.default: _cat,
    aten.softmax.int: _softmax,
    aten._softmax.default: _softmax,
    aten.dropout.default: _identity,
    aten.feature_dropout.default: _identity,
    aten.alpha_dropout.default: _identity,
    aten.clone.default: _identity,
    aten.alias.default: _identity,
    aten.detach.default: _identity,
    aten.detach_.default: _identity,
    aten.lift_fresh_copy.default: _identity,
    aten._to_copy.default: _identity,
    aten.to.dtype: _identity,
}
