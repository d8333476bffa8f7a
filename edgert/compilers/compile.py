"""compile: model (live module, .pt2 or .onnx) -> frontend -> passes -> backend -> Artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert import ir
from edgert.artifact import Artifact
from edgert.compilers.adapt_memory import parse_size, plan_entropy
from edgert.compilers.adapt_plan import plan_adaptation
from edgert.compilers.backends.tvm import TvmBuild, compile_graph
from edgert.compilers.passes.select_shift_path import preferred_path, select_shift_path
from edgert.compilers.passes.float_to_shift import DEFAULT_ACT_BITS, float_to_shift, relative_error
from edgert.ops.shift.nodes import _ShiftBase
from edgert.compilers.partition import choose_backends, partition
from edgert.compilers.passes.fold_binary_threshold import fold_binary_threshold
from edgert.compilers.passes.binarize_sign_layers import binarize_sign_layers
from edgert.compilers.passes.pack_before_flatten import pack_before_flatten
from edgert.compilers.passes.schedule_mst import schedule_mst
from edgert.compilers.passes import fold_batchnorm, fuse_linear_leaky, remove_dead_nodes
from edgert.errors import EdgertError, InternalError
from edgert.targets import Target, load_target

BACKENDS = ("tvm", "numba")  # what this edgert can compile for; node classes state their preference


def import_model(model: Any, example_input: Any = None, dt: float | None = None) -> ir.Graph:
    """Run the frontend that fits ``model``: an nn.Module, a .pt2, .onnx or .nir file (``dt``: the time
    step in seconds of a .nir file, for NIR's continuous-time neurons)."""
    is_nir = isinstance(model, (str, Path)) and Path(model).suffix == ".nir"
    if dt is not None and not is_nir:
        what = model if isinstance(model, (str, Path)) else type(model).__name__
        raise EdgertError(f"a time step (dt={dt}) was given for {what}, but only .nir files take one (their "
                          "neurons are continuous-time); leave --dt out")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise EdgertError(f"model file {path} does not exist")
        if path.suffix == ".onnx":
            from edgert.compilers.frontends.onnx import from_onnx
            return from_onnx(path)
        if path.suffix == ".nir":
            from edgert.compilers.frontends.nir import from_nir
            return from_nir(path, dt)  # dt None: the one in the file's edgert metadata
        if path.suffix == ".pt2":
            from edgert.compilers.frontends.torch import from_torch
            return from_torch(path, example_input)
        raise EdgertError(f"model file {path}: unknown kind {path.suffix!r}; give a torch.export "
                          "ExportedProgram saved as .pt2 (torch.export.save) or an .onnx file")
    from edgert.compilers.frontends.snntorch import from_snntorch, is_snntorch_model
    if is_snntorch_model(model):
        return from_snntorch(model, example_input)
    from edgert.compilers.frontends.torch import from_torch
    return from_torch(model, example_input)


def optimize(g: ir.Graph, fold_bn: bool = True) -> ir.Graph:
    """The default pass pipeline; ``fold_bn=False`` keeps BatchNorm nodes for adaptation."""
    g = remove_dead_nodes(g.validate())
    g = pack_before_flatten(binarize_sign_layers(g))
    if fold_bn:
        g = schedule_mst(fold_binary_threshold(g))
        g = fold_batchnorm(g)
    g = fuse_linear_leaky(g)
    return remove_dead_nodes(g).validate()


def compile_model(model: Any, example_input: Any = None, target: str | Target = "x86-host",
                  fold_bn: bool = True, progress: Callable[[str], None] | None = None,
                  adapt_memory: str | int | None = None, adapt_batch: int = 1, adapters: bool = False,
                  adapter_data: Any = None, adapter_steps: int = 300, adapter_rank: int | None = None,
                  dt: float | None = None) -> Artifact:
    """Compile a trained model into an Artifact for ``target`` (a name from `edgert targets`).

    ``adapt_memory`` ("32MB", or bytes) makes the entropy adaptation step fit that budget at
    ``adapt_batch`` samples by adapting only the deepest BatchNorms (compilers/adapt_memory.py).
    ``adapters=True`` adds side blocks for the opt-in ``adapter`` policy (compilers/adapters.py), warmed
    up for ``adapter_steps`` steps on ``adapter_data`` (an .npz path or a mapping with x and maybe y),
    full 1x1 convs or, with ``adapter_rank`` r, C->r->C bottlenecks; the budget then plans the adapter
    step instead (the deepest side blocks that fit are trained on the device) and entropy adapts every
    BatchNorm. ``dt`` is the time step in seconds of a .nir model.
    """
    say = progress or (lambda msg: None)
    budget = parse_size(adapt_memory) if isinstance(adapt_memory, str) else adapt_memory
    if adapt_batch < 1:
        raise EdgertError(f"adapt_batch={adapt_batch}: the batch size the step is planned for must be >= 1")
    if adapter_data is not None and not adapters:
        raise EdgertError("adapter data was given without adapters: add --adapters (adapters=True) to "
                          "insert the side blocks it warms up, or leave out --adapter-data")
    tgt = target if isinstance(target, Target) else load_target(target)
    if isinstance(example_input, np.ndarray):
        example_input = example_input.astype(np.float32, copy=False)
    say("importing model")
    imported = import_model(model, example_input, dt)
    if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        # before BatchNorm folding: a BatchNorm after a shift layer stays its own node, so it can adapt
        imported = _shift_layers_from_onnx(imported, example_input, say)
    graph = optimize(imported, fold_bn)
    graph = select_shift_path(graph, preferred_path(tgt.throughput))
    if tgt.c:
        if adapters or budget is not None or not fold_bn:
            raise EdgertError(f"{tgt.name} is a microcontroller: its firmware runs inference only, so "
                              "--adapters, --adapt-memory and --keep-bn do not apply; leave them out, or "
                              "compile for a Linux board (`edgert targets`) to adapt on the device")
        return build_artifact(graph, tgt, say)
    side = None
    if adapters:
        from edgert.compilers.adapters import add_adapters

        graph, side = add_adapters(graph, adapter_data, adapter_steps, say, adapter_rank, budget, adapt_batch)
    elif adapter_rank is not None:
        raise EdgertError("an adapter rank was given without adapters: add --adapters (adapters=True), or "
                          "leave out --adapter-rank")
    graph, plan = plan_adaptation(optimize(imported, fold_bn=False), graph)  # what adapt/ needs
    entropy = plan_entropy(graph, plan["norm"], None if adapters else budget, adapt_batch)
    if entropy is not None:  # the entropy step's backward reads these forward values: tap them
        plan["entropy"] = entropy
        inputs = dict(graph.inputs)
        plan["taps"] = list(dict.fromkeys(plan["taps"] + [n for n in entropy["needed"] if n not in inputs]))
    if side is not None:
        plan["adapter"] = side
        plan["taps"] = list(dict.fromkeys(plan["taps"] + side["taps"]))
    return build_artifact(graph, tgt, say, adapt=plan)


def _shift_layers_from_onnx(graph: ir.Graph, example_input: Any, say: Callable[[str], None]) -> ir.Graph:
    """ONNX stores shift networks as float ±2^p weights: make them shift layers (passes/float_to_shift).

    The example input, when given, is the calibration batch for the activation formats, and the
    conversion's error against the float graph on it is reported.
    """
    feeds = None
    if example_input is not None:
        feeds = (dict(example_input) if isinstance(example_input, dict)
                 else {graph.inputs[0][0]: np.asarray(example_input, np.float32)})
    converted = float_to_shift(graph, feeds)
    n = sum(isinstance(a, _ShiftBase) for a in converted.nodes) - sum(isinstance(a, _ShiftBase) for a in graph.nodes)
    if n:
        how = "calibrated on the example input" if feeds else (
            f"{DEFAULT_ACT_BITS}-bit activations by default; give an example input to calibrate 8-bit ones")
        msg = f"{n} conv/linear layers with ±2^p weights became shift layers ({how})"
        if feeds:
            msg += f"; relative error vs the float model on it: {relative_error(graph, converted, feeds):.3%}"
        say(msg)
    return converted


def _build_stage(sub: ir.Graph, tgt: Target) -> tuple[bytes, TvmBuild]:
    built = compile_graph(sub, tgt.tvm, cross_compiler=tgt.cross_compiler)
    if list(built.param_names) != sorted(sub.params):
        raise InternalError(f"TVM library takes parameters in order {built.param_names}, "
                            "the artifact expects them sorted by name")
    return built.library, built


def build_artifact(graph: ir.Graph, target: str | Target = "x86-host",
                   progress: Callable[[str], None] | None = None, adapt: dict | None = None) -> Artifact:
    """Choose a backend per node, partition into stages, build each TVM stage, bundle the artifact.

    ``adapt`` (from plan_adaptation) goes into the manifest. Its "taps" are computed by a second
    library for each TVM stage that makes one (the stage entry's "taps": library and all its outputs),
    used only by ``Engine.run_with_taps``; plain inference runs the library without them.
    """
    say = progress or (lambda msg: None)
    tgt = target if isinstance(target, Target) else load_target(target)
    if tgt.c:
        return _build_firmware(graph, tgt, say)
    backends = choose_backends(graph, BACKENDS)
    stages, libraries = [], {}
    if tgt.has_codegen:
        specs = graph.infer_specs()
        tapped = partition(graph, backends, keep=tuple((adapt or {}).get("taps", ())))
        for i, (stage, with_taps) in enumerate(zip(partition(graph, backends), tapped)):
            entry = {"backend": stage.backend, "nodes": [n.name for n in stage.nodes],
                     "inputs": list(stage.inputs), "outputs": list(stage.outputs)}
            if stage.backend == "tvm":
                say(f"building stage {i} ({len(stage.nodes)} nodes) for {tgt.name} with TVM")
                lib = f"lib/stage{i}.so"
                libraries[lib], built = _build_stage(stage.subgraph(graph, specs), tgt)
                entry.update(library=lib, params=list(built.param_names), kernels=built.kernels)
                if with_taps.outputs != stage.outputs:
                    # a second library also returns the adaptation taps: returning them from the
                    # inference library costs every inference (unfused kernels, extra outputs)
                    say(f"building stage {i} again, also returning adaptation taps")
                    taps_lib = f"lib/stage{i}.taps.so"
                    libraries[taps_lib], _ = _build_stage(with_taps.subgraph(graph, specs), tgt)
                    entry["taps"] = {"library": taps_lib, "outputs": list(with_taps.outputs)}
            stages.append(entry)
    info = {"name": tgt.name, "arch": tgt.arch, "tvm": tgt.tvm}
    return Artifact.create(graph, info, stages, libraries, backends, {"adapt": adapt} if adapt else None)


def _build_firmware(graph: ir.Graph, tgt: Target, say: Callable[[str], None]) -> Artifact:
    """A microcontroller artifact: the model as C (compilers/backends/c), linked into a firmware image
    for the target's core; fails at compile time when the image does not fit the board."""
    import dataclasses
    import tempfile

    from edgert.compilers.backends.c.emit import emit_c
    from edgert.compilers.backends.c.firmware import build_firmware, check_fits

    say(f"emitting C for {tgt.name}")
    model = emit_c(graph)
    say(f"building the firmware with {tgt.c['compiler']}")
    with tempfile.TemporaryDirectory(prefix="edgert-fw-") as d:
        fw = build_firmware(model.files, tgt.c, d, file_flags=model.flags)
    check_fits(fw.footprint, tgt.memory.get("flash_bytes"), tgt.memory.get("ram_bytes"))
    members = {f"c/{k}": v.encode() for k, v in model.files.items()}
    members["firmware/model.elf"] = fw.elf
    firmware = {
        "machine": tgt.c["machine"], "c": dict(tgt.c), "members": sorted(members),
        "input_size": model.input_size, "output_size": model.output_size, "stateful": model.stateful,
        "arena_bytes": model.arena_bytes, "liveness_bytes": model.liveness_bytes,
        "state_bytes": model.state_bytes, "weight_bytes": model.weight_bytes,
        "file_flags": model.flags, "footprint": dataclasses.asdict(fw.footprint),
    }
    info = {"name": tgt.name, "arch": tgt.arch, "tvm": {}}
    return Artifact.create(graph, info, [], members, {n.name: "c" for n in graph.nodes}, {"firmware": firmware})
