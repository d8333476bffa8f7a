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
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.experimental.symbolic_shapes import statically_known_true

from edgert import ir
from edgert.compilers.frontends._common import (BatchChange, Names, Problems, Unsupported, rename_outputs,
                                                show_shape)
from edgert.compilers.frontends.torch_ops import CONVERTERS, target_name
from edgert.compilers.passes.fold_pad_into_conv import fold_pad_into_conv
from edgert.errors import EdgertError, InternalError, IRValidationError, UnsupportedOpError

aten = torch.ops.aten
Example = np.ndarray | torch.Tensor | tuple[int, ...] | list[int]

_FIX = ("Replace these layers with supported ones (e.g. nn.Softplus -> nn.ReLU), or add a converter to "
        "CONVERTERS in edgert/compilers/frontends/torch_ops.py.")


def from_torch(model_or_path: nn.Module | ExportedProgram | str | os.PathLike,
               example_input: Example | None = None) -> ir.Graph:
    """Convert a float CNN (module, ExportedProgram or .pt2 path) into a validated edgert Graph.

    ``example_input`` is needed for a module: an array or tensor of the input's full shape (batch
    first), or just that shape as a tuple. The graph input is named "input"; its batch dimension is
    ``None`` unless the model only works with a fixed batch (then a warning says why).
    """
    if isinstance(model_or_path, ExportedProgram):
        return TorchImporter(model_or_path).run()
    if isinstance(model_or_path, (str, os.PathLike)):
        return TorchImporter(_load_pt2(Path(model_or_path))).run()
    if not isinstance(model_or_path, nn.Module):
        raise EdgertError(f"from_torch takes an nn.Module, a torch.export.ExportedProgram or the path of a "
                          f".pt2 file; got {type(model_or_path).__name__}")
    if example_input is None:
        raise EdgertError("from_torch needs example_input for an nn.Module: an input tensor or its shape, "
                          "batch first, e.g. from_torch(model, (1, 3, 32, 32))")
    model, x = model_or_path.eval(), _example_tensor(example_input)
    dynamic_error: UnsupportedOpError | None = None
    try:
        # A batch of 1 would be specialized by torch.export, so trace a batch of at least 2.
        ep = torch.export.export(model, (x if x.shape[0] >= 2 else torch.cat([x, x]),),
                                 dynamic_shapes=({0: Dim("batch")},))
    except Exception as e:
        reason = f"exporting with a dynamic batch failed ({_first_line(e)})"
    else:
        importer = TorchImporter(ep)
        try:
            return importer.run()
        except UnsupportedOpError as e:
            if not importer.mixes_batch:
                raise
            dynamic_error, reason = e, "with a dynamic batch, the model mixes values across the batch axis"
    graph = _convert_fixed_batch(model, x, dynamic_error)
    warnings.warn(f"from_torch: compiled for a fixed batch of {x.shape[0]}: {reason}", stacklevel=2)
    return graph


def _convert_fixed_batch(model: nn.Module, x: torch.Tensor, dynamic_error: UnsupportedOpError | None) -> ir.Graph:
    """Export and convert with x's own batch size; a failure re-raises ``dynamic_error`` when there is one."""
    try:
        ep = torch.export.export(model, (x,))
    except Exception as e:
        if dynamic_error is not None:
            raise dynamic_error from None
        raise EdgertError(
            f"torch.export could not trace the model ({type(e).__name__}: {_first_line(e)}). Make "
            "forward() traceable: no Python control flow on tensor values, no .item()/.numpy()/.tolist(), "
            "tensors in and out") from e
    try:
        return TorchImporter(ep).run()
    except UnsupportedOpError:
        if dynamic_error is not None:
            raise dynamic_error from None
        raise


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


class TorchImporter:
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
        self.mixes_batch = False  # some op's output does not keep the input's batch axis

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
        self.problems.raise_if_any([target_name(t).rsplit(".", 1)[0] for t in CONVERTERS], _FIX)
        graph = rename_outputs(ir.Graph(inputs=(("input", self.input_spec),), nodes=tuple(self.nodes),
                                        outputs=tuple(outputs), params=self.params))
        self._check_shapes(graph, outputs)
        return fold_pad_into_conv(graph)

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
            shape = self.dims(val)
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
            if n.target not in CONVERTERS and _computes(n) and getattr(n.target, "__name__", "") != "getitem":
                self.problems.add(target_name(n.target), _where(n))
            self.dead.add(n.name)
            return
        if all(i.name in self.consts for i in ins) and _foldable(n.target):
            try:
                self._fold(n)
            except Exception as e:  # whatever the op raises on these constants
                self.problems.add(target_name(n.target), _where(n), f"evaluating it on constants failed: {e}")
                self.dead.add(n.name)
            return
        if getattr(n.target, "__name__", "") == "getitem" and ins[0].name in self.tuples:
            self._getitem(n)
            return
        if not _computes(n):
            return  # shape arithmetic (sym_size, ...) and runtime assertions: nothing to compute
        convert = CONVERTERS.get(n.target)
        try:
            if convert is None:
                raise Unsupported("")
            convert(self, n)
            self._check_batch(n)
        except (Unsupported, IRValidationError) as e:
            self.problems.add(target_name(n.target), _where(n), str(e))
            self.dead.add(n.name)
            self.mixes_batch |= isinstance(e, BatchChange)

    def _check_batch(self, n: fx.Node) -> None:
        """Every value computed from the input keeps the input's batch axis 0 (reshapes say more below)."""
        val = n.meta["val"]
        if isinstance(val, torch.Tensor) and n.target not in _RESHAPES:
            shape, batch = self.dims(val), self.input_spec.shape[0]
            if not shape or shape[0] != batch:
                raise BatchChange(f"its output {show_shape(shape)} does not keep the batch dimension 0 of the "
                                  f"input ({'N' if batch is None else batch}); edgert graphs compute each "
                                  "sample on its own")

    def _fold(self, n: fx.Node) -> None:
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda a: self.consts[a.name])
        with torch.no_grad():
            self.consts[n.name] = n.target(*args, **kwargs)
        first = next((i for i in n.all_input_nodes if i.name in self.labels), None)
        op = target_name(n.target).split(".")[1] if "." in target_name(n.target) else n.name
        if first is None:
            self.labels[n.name] = n.name
        elif op in _COPIES:
            self.labels[n.name] = self.labels[first.name]
        else:
            self.labels[n.name] = f"{self.labels[first.name]}.{op}"

    def _getitem(self, n: fx.Node) -> None:
        value = self.tuples[n.args[0].name][n.args[1]]
        if value is None:
            self.problems.add(f"output {n.args[1]} of {target_name(n.args[0].target)}", _where(n),
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
                want = self.dims(n.meta["val"])
                if got != want:
                    raise InternalError(f"from_torch: {n.name} ({target_name(n.target)}) came out with shape "
                                        f"{got}, but torch computes {want}")

    # ---- helpers for converters ----

    def dims(self, val: torch.Tensor) -> tuple:
        """Shape with the dynamic batch as None; other symbolic sizes as text (e.g. '48*N')."""
        out: list[Any] = []
        for d in val.shape:
            if isinstance(d, int):
                out.append(d)
            elif isinstance(self.batch, torch.SymInt) and statically_known_true(d == self.batch):
                out.append(None)
            elif isinstance(self.batch, torch.SymInt):
                out.append(str(d).replace(str(self.batch), "N"))
            else:
                out.append(str(d))
        return tuple(out)

    def shape(self, a: fx.Node) -> tuple:
        """Shape of an FX value as the IR writes it (see ``dims``)."""
        return self.dims(a.meta["val"])

    def value(self, a: Any) -> str:
        """The IR name of an argument: an activation, or a constant emitted as a parameter."""
        if isinstance(a, fx.Node) and a.name in self.acts:
            return self.acts[a.name]
        if isinstance(a, fx.Node) and isinstance(self.consts.get(a.name), torch.Tensor):
            return self.param(a.name, self.labels[a.name], self.consts[a.name])
        raise Unsupported(f"argument {a!r} is neither a tensor computed from the input nor a constant tensor")

    def const(self, a: Any, what: str) -> torch.Tensor:
        """The compile-time tensor behind argument ``a`` (Unsupported if it depends on the input)."""
        if isinstance(a, fx.Node) and isinstance(self.consts.get(a.name), torch.Tensor):
            return self.consts[a.name]
        raise Unsupported(f"the {what} must be a constant (a parameter or buffer), not computed from the input")

    def param(self, key: str, label: str, t: torch.Tensor | np.ndarray) -> str:
        """Emit ``t`` as a float32 parameter named after ``label``, once per ``key``; return its name."""
        if key not in self.param_of:
            arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            self.param_of[key] = name = self.values(label)
            self.params[name] = arr
        return self.param_of[key]

    def out(self, n: fx.Node, suffix: str = "") -> str:
        """A fresh IR value name for ``n``; without a suffix it becomes n's value."""
        name = self.values(n.name + suffix)
        if not suffix:
            self.acts[n.name] = name
        return name

    def emit(self, cls: type[ir.Node], n: fx.Node, inputs: tuple[str, ...], out: str | None = None,
             suffix: str = "", **attrs: Any) -> str:
        """Append one IR node for FX node ``n``, named by its module path; return its output value."""
        stack = n.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""
        name = self.node_names(f"{path}.{n.name}{suffix}" if path else f"{n.name}{suffix}")
        out = out or self.out(n)
        self.nodes.append(cls(name=name, inputs=inputs, output=out, **attrs))
        return out

    def alias(self, n: fx.Node, a: fx.Node) -> None:
        """Make ``n`` stand for the same value as ``a`` (identity ops emit nothing)."""
        if a.name in self.acts:
            self.acts[n.name] = self.acts[a.name]
        else:
            self.consts[n.name], self.labels[n.name] = self.consts[a.name], self.labels[a.name]


_RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
             aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default}

# Ops that copy a tensor unchanged: a folded constant keeps its source's name through them.
_COPIES = {"lift_fresh_copy", "detach", "detach_", "clone", "alias", "_to_copy", "to", "contiguous"}


def _computes(n: fx.Node) -> bool:
    """Whether FX node ``n`` yields tensors (as opposed to sizes or nothing)."""
    val = n.meta.get("val")
    return isinstance(val, torch.Tensor) or (isinstance(val, (tuple, list))
                                             and any(isinstance(v, torch.Tensor) for v in val))


def _foldable(target: Any) -> bool:
    if getattr(target, "__name__", "") == "getitem":
        return True
    return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded not in target.tags
