"""The `edgert` command: compile | run | profile | targets | daemon | agent | deploy."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from edgert.errors import EdgertError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compile trained models into .edgert artifacts and run them on edge boards.")
# Piped output (make demo, CI logs) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)  # an error line is never hard-wrapped mid-message


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise EdgertError(f"--input-shape {text!r}: give comma-separated ints, e.g. 1,1,8,8") from None
    if not shape or min(shape) < 1:
        raise EdgertError(f"--input-shape {text!r}: every dimension must be >= 1")
    return shape


THREADS_HELP = "TVM threads per inference (default: $EDGERT_THREADS, else edgert picks: 1 for small models)."


def _use_threads(threads: int | None) -> None:
    """--threads N: the engines this command loads run TVM on N threads (as EDGERT_THREADS=N does)."""
    if threads is not None:
        os.environ["EDGERT_THREADS"] = str(threads)


@app.command()
def compile(
    model: Path = typer.Argument(..., help="A .pt2 (torch.export.save), .onnx or .nir file."),
    target: str = typer.Option("x86-host", "--target", "-t", help="Board name; see `edgert targets`."),
    output: Path = typer.Option(None, "--output", "-o", help="Artifact path [default: MODEL.edgert]."),
    input_shape: str = typer.Option(None, help="Example input shape for .pt2 files, e.g. 1,1,8,8."),
    calibration: Path = typer.Option(None, help="For an .onnx file: a representative input batch (.npy) that "
                                     "sets the 8-bit activation ranges of the layers with ±2^p weights, "
                                     "which become shift layers (without it they take 16-bit activations)."),
    keep_bn: bool = typer.Option(False, help="Keep BatchNorm unfolded (for adaptation)."),
    adapt_memory: str = typer.Option(None, help="Memory budget of the entropy adaptation step, e.g. 32MB "
                                                "(adapts only the deepest BatchNorms that fit); with "
                                                "--adapters, of the adapter step (trains only the deepest "
                                                "side blocks that fit)."),
    adapt_batch: int = typer.Option(1, min=1, help="Samples the entropy step holds at once (--adapt-memory "
                                    "plans at this batch; larger batches are stepped in chunks of this many)."),
    adapters: bool = typer.Option(False, "--adapters", help="Add side blocks for the opt-in `adapter` policy."),
    adapter_data: Path = typer.Option(None, help="With --adapters: source data .npz (x, optional labels y) "
                                                 "to warm the side blocks up on."),
    adapter_steps: int = typer.Option(300, min=1, help="With --adapter-data: warm-up steps (batches of 64)."),
    adapter_rank: int = typer.Option(None, min=1, help="With --adapters: the side blocks the device trains are "
                                     "C->R->C bottlenecks (fewer parameters, so less step memory) instead of "
                                     "full 1x1 convs."),
    dt: float = typer.Option(None, "--dt", help="For a .nir file: the time step in "
                             "seconds its continuous-time neurons are discretised at, e.g. 1e-4."),
) -> None:
    """Compile MODEL for one target into an .edgert artifact."""
    from edgert.compilers.adapt_memory import size_text
    from edgert.compilers.compile import compile_model

    example = np.zeros(_shape(input_shape), np.float32) if input_shape else None
    if calibration is not None:
        if model.suffix != ".onnx":
            raise EdgertError(f"--calibration applies to .onnx models, {model} is not one; leave it out")
        example = _load_input(calibration, "--calibration")
    out = output or model.with_suffix(".edgert")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        status.update(msg)
        if msg.startswith("warming up") or "became shift layers" in msg:
            console.print(msg, highlight=False)

    with console.status("compiling") as status:
        art = compile_model(model, example, target, fold_bn=not keep_bn, progress=say,
                            adapt_memory=adapt_memory, adapt_batch=adapt_batch,
                            adapters=adapters, adapter_data=adapter_data, adapter_steps=adapter_steps,
                            adapter_rank=adapter_rank, dt=dt)
        art.save(out)
    side = art.manifest.get("adapt", {}).get("adapter")
    if side is not None:
        w = side["warmup"]
        n_all = len(side["blocks"]) + len(side["frozen_blocks"])
        console.print(f"adapters: {n_all} side blocks, the device trains the last {len(side['blocks'])}"
                      + (f" (estimated step peak {size_text(side['estimate_bytes']['step_peak'])} at batch "
                         f"{side['batch']}, budget {adapt_memory})" if adapt_memory else "") + "; " + (
            f"warmed up {w['steps']} steps on {w['samples']} samples ({w['loss']}), clean accuracy "
            f"vs {w['scored_against']} {w['clean_accuracy_before']:.3f} -> {w['clean_accuracy_after']:.3f}" if w else
            "no --adapter-data, so they start at identity (zero weights: outputs unchanged)"), highlight=False)
    size = sum(len(b) for b in art.libraries.values())
    fw = art.manifest.get("firmware")
    if fw is not None:
        f = fw["footprint"]
        lib = (f"C firmware for {fw['machine']}: flash {f['flash_bytes']:,} B, RAM {f['ram_bytes']:,} B "
               f"(arena {fw['arena_bytes']:,} B; measured from the linked image)")
    elif art.runnable:
        lib = f"{len(art.manifest['stages'])} stages, libraries {size / 1e3:.0f} kB"
    else:
        lib = (f"no compiled code: {art.target_name} has no code generation yet, so this artifact is "
               "estimate only (`edgert profile` works on it, `edgert run` does not)")
    console.print(f"wrote [bold]{out}[/] for {art.target_name}: {len(art.manifest['graph']['nodes'])} nodes, "
                  f"{lib}, in {time.perf_counter() - t0:.1f} s")
    entropy = art.manifest.get("adapt", {}).get("entropy")
    if adapt_memory and entropy and side is None:
        est, n_bn = entropy["estimate_bytes"]["step_peak"], len(art.manifest["adapt"]["norm"])
        console.print(f"entropy step: adapts the last {len(entropy['layers'])} of {n_bn} BatchNorms, estimated "
                      f"peak {size_text(est)} at batch {entropy['batch']} (budget {adapt_memory})")


@app.command()
def run(
    artifact: Path = typer.Argument(..., help="An .edgert file."),
    input: Path = typer.Option(..., "--input", "-i", help="Input batch as .npy."),
    output: Path = typer.Option(None, "--output", "-o", help="Write outputs here as .npy."),
    adapt: str = typer.Option(None, help="Adapt while running: norm, entropy, knn, adapter (opt-in), none "
                                         "(see README 'Adapt')."),
    adapt_batch: int = typer.Option(1, min=1, help="With --adapt: samples per adaptation step."),
    adapt_state: Path = typer.Option(None, help="With --adapt: load this .npz state if it exists, save after."),
    remote: str = typer.Option(None, "--remote", help="Run on the board's `edgert agent` at this URL instead."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Run ARTIFACT on the batch in an .npy file (with --adapt, as a stream that adapts)."""
    _use_threads(threads)
    if remote:
        return _run_remote(artifact, input, output, remote)
    from edgert.artifact import Artifact
    from edgert.runtime.engine import Engine

    art = Artifact.read(artifact)
    x = _load_input(input)
    if "firmware" in art.manifest:
        if adapt:
            raise EdgertError("--adapt: a microcontroller artifact runs inference only; leave --adapt out")
        return _run_emulated(art, x, output)
    engine = Engine(art)
    t0 = time.perf_counter()
    if adapt:
        y = _run_adapting(engine, x, adapt, adapt_batch, adapt_state)
    else:
        y = engine.run(x)
    ms = (time.perf_counter() - t0) * 1e3
    ys = y if isinstance(y, list) else [y]
    for (name, _), arr in zip(engine.outputs, ys):
        console.print(f"{name}: shape {arr.shape}, dtype {arr.dtype}")
        if arr.ndim == 2:
            console.print(f"  argmax per sample: {arr.argmax(axis=1)[:20].tolist()}"
                          + (" ..." if len(arr) > 20 else ""))
    console.print(f"latency {ms:.3f} ms (measured, one call, this machine)")
    if output:
        np.save(output, ys[0] if len(ys) == 1 else np.stack(ys))
        console.print(f"wrote {output}")


def _load_input(path: Path, option: str = "--input") -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        raise EdgertError(f"cannot read {option} {path}: {e}; give a .npy file (numpy.save)") from None
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
        x = x.astype(np.float32)  # the CLI converts float data; the Python API asks the caller to
    return x


def _run_emulated(art, x: np.ndarray, output: Path | None) -> None:
    """An MCU artifact: its firmware on the emulated core; every figure is labelled emulated."""
    from edgert.runtime.mcu import McuRunner

    runner = McuRunner(art)
    y = runner.run(x)
    ys = y if isinstance(y, list) else [y]
    err.print(f"emulated: ran the firmware on QEMU {runner.machine} (instructions executed, not timed; "
              "outputs as the board computes them)", highlight=False)
    for (name, _), arr in zip(runner.outputs, ys):
        console.print(f"{name}: shape {arr.shape}, dtype {arr.dtype}")
        if arr.ndim == 2:
            console.print(f"  argmax per sample: {arr.argmax(axis=1)[:20].tolist()}"
                          + (" ..." if len(arr) > 20 else ""))
    per = "time step" if runner.stateful else "inference"
    s = runner.stats
    if s.get("instructions_per_call"):
        calls = s["instructions_per_call"]
        console.print(f"{int(np.median(calls)):,} instructions per {per} (emulated instruction count, median "
                      f"of {len(calls)})")
    if output:
        np.save(output, ys[0] if len(ys) == 1 else np.stack(ys))
        console.print(f"wrote {output}")


def _run_adapting(engine, x: np.ndarray, name: str, batch: int, state: Path | None) -> np.ndarray:
    """Feed ``x`` through adaptation policy ``name`` in chunks of ``batch``; print its stats."""
    from edgert.runtime.adapt import make_policy
    from edgert.runtime.adapt.base import load_state, save_state

    policy = make_policy(name, engine)
    if state is not None and state.is_file():
        load_state(policy, state)
    if engine.stateful:  # x is [T, N, ...]: chunk the samples, not time; knn answers [batch, C]
        ys = [policy.run(x[:, i:i + batch]) for i in range(0, x.shape[1], batch)]
        y = np.concatenate(ys, axis=0 if getattr(policy, "replaces_output", False) else 1)
    else:
        y = np.concatenate([policy.run(x[i:i + batch]) for i in range(0, len(x), batch)])
    if state is not None:
        save_state(policy, state)
    console.print(f"adaptation: {json.dumps(policy.stats())}", soft_wrap=True, markup=False, highlight=False)
    return y


def _run_remote(artifact: Path, input: Path, output: Path | None, url: str) -> None:
    from edgert.link.deploy import run_remote

    ys, ms = run_remote(url, artifact, _load_input(input))
    for i, arr in enumerate(ys):
        console.print(f"output {i}: shape {arr.shape}, dtype {arr.dtype}")
    console.print(f"latency {ms:.3f} ms (measured on board, one call)")
    if output:
        np.save(output, ys[0] if len(ys) == 1 else np.stack(ys))
        console.print(f"wrote {output}")


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, k in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n:.0f} B"


@app.command("export-c")
def export_c(
    artifact: Path = typer.Argument(..., help="An .edgert file compiled for a microcontroller target."),
    out: Path = typer.Option(..., "--output", "-o", help="Folder to write model.h, model.c and kernels/ into."),
) -> None:
    """Write a microcontroller artifact's C sources, to build into your own firmware with any C99 compiler."""
    from edgert.artifact import Artifact

    art = Artifact.read(artifact)
    fw = art.manifest.get("firmware")
    if fw is None:
        raise EdgertError(f"{artifact} was compiled for {art.target_name}, which is not a microcontroller, so "
                          "it holds no C; compile with --target stm32h7 or --target nrf52840")
    files = sorted(m for m in fw["members"] if m.startswith("c/"))
    for member in files:
        path = out / member[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(art.libraries[member])
    flags = "".join(f"; {f} with {' '.join(v)}" for f, v in sorted(fw.get("file_flags", {}).items()))
    console.print(f"wrote {len(files)} files to {out}: call edgert_model_run() from your main (model.h). Build: "
                  f"cc -std=c99 -O2 -I {out} {out}/model.c {out}/kernels/*.c main.c -lm{flags}", highlight=False)


@app.command()
def targets() -> None:
    """List the known target boards, one line each."""
    from edgert.targets import load_target, target_files

    table = Table()  # one line per board: no cell wraps; a long description is cut with an ellipsis
    for col in ("name", "arch", "cores x clock", "RAM", "flash", "codegen"):
        table.add_column(col, no_wrap=True, min_width={"name": 12, "cores x clock": 14, "codegen": 13}.get(col))
    table.add_column("description", no_wrap=True, overflow="ellipsis", ratio=1)
    bad = []
    for name, path in target_files().items():
        try:
            t = load_target(path)
        except EdgertError as e:
            table.add_row(name, "", "", "", "", "[red]malformed[/]", str(path))
            bad.append(str(e))
            continue
        clock = t.cpu.get("clock_hz")
        cpu = f"{t.cpu.get('cores', '?')} x {clock / 1e9:.3g} GHz" if clock else "-"
        table.add_row(t.name, t.arch, cpu, _size(t.memory.get("ram_bytes")), _size(t.memory.get("flash_bytes")),
                      t.codegen, t.description)
    console.print(table)
    for e in bad:
        err.print(f"[red]error:[/] {e}", highlight=False)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.4f}"


def _uj(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:.3f}"


def _print_measured(report: dict, name: str) -> None:
    t = report["total"]
    table = Table("node", "op", "output", "MACs", "other ops", "bytes moved", "param B", "latency ms", "how",
                  title=f"{name} on this machine, batch {report['batch']}, per {report['per']}")
    for n in report["nodes"]:
        table.add_row(n["name"], n["op"], "x".join(map(str, n["output_shape"])), f"{n['macs']:,}",
                      f"{n['other_ops']:,}", f"{n['bytes_moved']:,}", f"{n['param_bytes']:,}",
                      _ms(n["latency_s"]), n["latency_label"])
    if t["latency_s"] is not None:
        table.add_row("(runtime overhead)", "", "", "", "", "", "", _ms(t["latency_s"] - t["kernels_s"]),
                      "end to end minus kernels: VM calls, input checks")
    table.add_row("total", "", "", f"{t['macs']:,}", f"{t['other_ops']:,}", f"{t['bytes_moved']:,}",
                  f"{t['param_bytes']:,}", _ms(t["latency_s"]), t["latency_label"], style="bold")
    console.print(table)
    console.print(f"peak live activations {t['peak_activation_bytes']:,} B (at {t['peak_activation_at']}, "
                  f"from tensor liveness); artifact {t['artifact_bytes']:,} B")


def _print_firmware(fw: dict, per: str) -> None:
    table = Table("", "bytes", "how", title=f"firmware for {fw['machine']}")
    table.add_row("flash", f"{fw['flash_bytes']:,}", f"{fw['source']}: code + weights ({fw['weight_bytes']:,} B "
                  "of weights)")
    table.add_row("RAM", f"{fw['ram_bytes']:,}", f"{fw['source']}: data + bss + stack ({fw['stack_bytes']:,} B "
                  "reserved)")
    table.add_row("  arena", f"{fw['arena_bytes']:,}", "planned from tensor liveness (model.h EDGERT_ARENA_BYTES)")
    table.add_row("  liveness peak", f"{fw['liveness_bytes']:,}", "estimate: the most activation bytes alive at once")
    console.print(table)
    console.print(f"{fw['emulated_instructions']:,} instructions per {per}: {fw['instructions_label']}",
                  highlight=False)


def _print_estimate(report: dict, est: dict) -> None:
    lab = est["labels"]
    table = Table("node", "ops by kind", "bytes moved", f"latency ms\n{lab['latency']}", "bound",
                  f"µJ\n{lab['energy_compute']}", f"µJ\n{lab['energy_memory']}",
                  title=f"{est['target']}: {est['description']} (estimates, batch {report['batch']}, "
                        f"per {report['per']})")
    for n, e in zip(report["nodes"], est["nodes"]):
        table.add_row(n["name"], ", ".join(f"{k} {v:,}" for k, v in n["ops"].items()) or "-",
                      f"{n['bytes_moved']:,}", _ms(e["latency_s"]), e["bound"], _uj(e["energy_compute_j"]),
                      _uj(e["energy_memory_j"]))
    t = est["total"]
    table.add_row("total", "", f"{report['total']['bytes_moved']:,}", _ms(t["latency_s"]),
                  f"{t['compute_bound_nodes']} compute-, {t['memory_bound_nodes']} memory-bound",
                  _uj(t["energy_compute_j"]), _uj(t["energy_memory_j"]), style="bold")
    console.print(table)
    for what in ("ram", "flash"):
        f = est["fit"][what]
        have = "?" if f["have_bytes"] is None else f"{f['have_bytes']:,}"
        colour = "green" if f["fits"] else "red"
        console.print(f"  {what.upper()}: [{colour}]{f['verdict']}[/] - needs {f['need_bytes']:,} B of {have} B "
                      f"({f['counts']})", highlight=False)


@app.command()
def profile(
    artifact: Path = typer.Argument(None, help="An .edgert file (optional with --calibrate)."),
    target: list[str] = typer.Option(None, "--target", "-t",
                                     help="Board(s) to estimate for [default: the artifact's own]."),
    all_targets: bool = typer.Option(False, "--all-targets", help="Estimate for every board in the catalogue."),
    batch: int = typer.Option(1, min=1, help="Batch size to count and time."),
    repeat: int = typer.Option(50, min=1, help="Timed runs per kernel."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    html: Path = typer.Option(None, "--html", help="Also write an HTML report with plots here."),
    calibrate: bool = typer.Option(False, "--calibrate",
                                   help="Measure this host's throughput per op kind; with ARTIFACT, compare "
                                        "predicted and measured latency per layer."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Per node: op counts, bytes, parameters, peak activations, latency measured here, and per-board
    estimates (roofline latency, energy under two models, RAM/flash fit)."""
    _use_threads(threads)
    if calibrate:
        from edgert.runtime.calibrate import calibrate_host, print_calibration

        print_calibration(calibrate_host(artifact, batch=batch, repeat=repeat), console, as_json)
        return
    if artifact is None:
        raise EdgertError("give an ARTIFACT to profile (or --calibrate to measure this host)")
    from edgert.runtime.profile import profile_artifact
    from edgert.targets import target_files

    boards = list(target_files()) if all_targets else (target or None)
    report = profile_artifact(artifact, batch=batch, repeat=repeat, targets=boards)
    if html:
        from edgert.runtime.profile_html import write_html

        write_html(report, html)
    if as_json:
        from edgert.runtime.calibrate import _plain

        print(json.dumps(report, indent=1, default=_plain))
        return
    _print_measured(report, artifact.name)
    if "firmware" in report:
        _print_firmware(report["firmware"], report["per"])
    for est in report["estimates"].values():
        _print_estimate(report, est)
    if html:
        console.print(f"wrote {html}")


@app.command()
def daemon(
    artifact: Path = typer.Argument(..., help="An .edgert file."),
    source: str = typer.Option(..., "--source", help="serial:///dev/ttyX?baud=N, socket://host:port (listens), "
                                                     "dir://PATH or stdin."),
    adapt: str = typer.Option("none", "--adapt", help="Adaptation policy (edgert.runtime.adapt)."),
    state_dir: Path = typer.Option(..., "--state-dir", help="Where checkpoints of the adapted state live."),
    checkpoint_every: int = typer.Option(1000, min=1, help="Checkpoint every N samples."),
    checkpoint_seconds: float = typer.Option(60.0, min=0.01, help="... or every T seconds."),
    keep: int = typer.Option(3, min=1, help="Checkpoints kept."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (connections, checkpoints)."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Serve ARTIFACT on a device: infer, adapt, checkpoint, survive; JSON-line logs on stderr."""
    _use_threads(threads)
    from edgert.daemon import Daemon, Log

    Daemon(artifact, adapt, state_dir, checkpoint_every, checkpoint_seconds, keep,
           log=Log(verbose=verbose)).run(source)


@app.command()
def agent(
    port: str = typer.Option(..., "--port", help="serial:///dev/ttyX?baud=N or socket://host:port (listens)."),
    store: Path = typer.Option(..., "--store", help="Folder of verified artifacts; `current` is the one served."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress."),
) -> None:
    """Run on the board: receive deployed artifacts, verify them, switch atomically, run remote requests."""
    import signal

    from edgert.daemon import Log
    from edgert.link.deploy import Agent
    from edgert.link.server import serve

    log = Log(verbose=verbose)
    stopped = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.append(1))
    a = Agent(store, log)
    log("start", port=port, store=str(store))
    serve(port, a.handle, lambda: bool(stopped), lambda: None, log)
    log("stop", runs=a.runs)


@app.command()
def deploy(
    artifact: Path = typer.Argument(..., help="An .edgert file."),
    port: str = typer.Option(..., "--port", help="The board's agent: serial:///dev/ttyX?baud=N, a device path, "
                                                 "or socket://host:port."),
    chunk: int = typer.Option(32768, min=256, max=512 * 1024, help="Bytes per chunk."),
) -> None:
    """Stream ARTIFACT to `edgert agent` in checksummed chunks; run again after a drop to resume."""
    from edgert.link.deploy import deploy as send

    r = send(port, artifact, chunk)
    resumed = f", resumed at {r['resumed_at']:,} B" if r["resumed_at"] else ""
    console.print(f"deployed {artifact.name} ({r['size']:,} B, sha256 {r['sha256'][:12]}) in "
                  f"{r['seconds']:.2f} s{resumed}; the board switched to it")


def main() -> None:
    try:
        app()
    except EdgertError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
