"""The `edgert` command: compile | run | profile | targets."""

from __future__ import annotations

import json
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
err = Console(stderr=True)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise EdgertError(f"--input-shape {text!r}: give comma-separated ints, e.g. 1,1,8,8") from None
    if not shape or min(shape) < 1:
        raise EdgertError(f"--input-shape {text!r}: every dimension must be >= 1")
    return shape


@app.command()
def compile(
    model: Path = typer.Argument(..., help="A .pt2 (torch.export.save) or .onnx file."),
    target: str = typer.Option("x86-host", "--target", "-t", help="Board name; see `edgert targets`."),
    output: Path = typer.Option(None, "--output", "-o", help="Artifact path [default: MODEL.edgert]."),
    input_shape: str = typer.Option(None, help="Example input shape for .pt2 files, e.g. 1,1,8,8."),
    keep_bn: bool = typer.Option(False, help="Keep BatchNorm unfolded (for adaptation)."),
) -> None:
    """Compile MODEL for one target into an .edgert artifact."""
    from edgert.compilers.compile import compile_model

    example = np.zeros(_shape(input_shape), np.float32) if input_shape else None
    out = output or model.with_suffix(".edgert")
    t0 = time.perf_counter()
    with console.status("compiling") as status:
        art = compile_model(model, example, target, fold_bn=not keep_bn,
                            progress=lambda msg: status.update(msg))
        art.save(out)
    size = sum(len(b) for b in art.libraries.values())
    lib = (f"{len(art.manifest['stages'])} stages, libraries {size / 1e3:.0f} kB" if art.runnable
           else f"no compiled code: {art.target_name} has no code generation yet, so this artifact is "
                "estimate only (`edgert profile` works on it, `edgert run` does not)")
    console.print(f"wrote [bold]{out}[/] for {art.target_name}: {len(art.manifest['graph']['nodes'])} nodes, "
                  f"{lib}, in {time.perf_counter() - t0:.1f} s")


@app.command()
def run(
    artifact: Path = typer.Argument(..., help="An .edgert file."),
    input: Path = typer.Option(..., "--input", "-i", help="Input batch as .npy."),
    output: Path = typer.Option(None, "--output", "-o", help="Write outputs here as .npy."),
) -> None:
    """Run ARTIFACT on the batch in an .npy file."""
    from edgert.runtime.engine import load

    engine = load(artifact)
    try:
        x = np.load(input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgertError(f"cannot read --input {input}: {e}; give a .npy file (numpy.save)") from None
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
        x = x.astype(np.float32)  # the CLI converts float data; the Python API asks the caller to
    t0 = time.perf_counter()
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


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, k in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n:.0f} B"


@app.command()
def targets() -> None:
    """List the known target boards, one line each."""
    from edgert.targets import load_target, target_files

    table = Table("name", "arch", "cores x clock", "RAM", "flash", "codegen", "description")
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
                      "tvm" if t.has_codegen else "estimate only", t.description)
    console.print(table)
    for e in bad:
        err.print(f"[red]error:[/] {e}", highlight=False)


@app.command()
def profile(
    artifact: Path = typer.Argument(..., help="An .edgert file."),
    batch: int = typer.Option(1, min=1, help="Batch size to count and time."),
    repeat: int = typer.Option(50, min=1, help="Timed runs per kernel."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per-node op counts, parameter bytes and latency measured on this machine."""
    from edgert.runtime.profile import profile_artifact

    report = profile_artifact(artifact, batch=batch, repeat=repeat)
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table("node", "op", "output", "MACs", "other ops", "param B", "latency ms", "how",
                  title=f"{artifact.name} on this machine, batch {batch}")
    for n in report["nodes"]:
        lat = "-" if n["latency_s"] is None else f"{n['latency_s'] * 1e3:.4f}"
        table.add_row(n["name"], n["op"], "x".join(map(str, n["output_shape"])), f"{n['macs']:,}",
                      f"{n['other_ops']:,}", f"{n['param_bytes']:,}", lat, n["latency_label"])
    t = report["total"]
    table.add_row("(runtime overhead)", "", "", "", "", "", f"{(t['latency_s'] - t['kernels_s']) * 1e3:.4f}",
                  "end to end minus kernels: VM calls, input checks")
    table.add_row("total", "", "", f"{t['macs']:,}", f"{t['other_ops']:,}", f"{t['param_bytes']:,}",
                  f"{t['latency_s'] * 1e3:.4f}", "measured end to end (median)", style="bold")
    console.print(table)


def main() -> None:
    try:
        app()
    except EdgertError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
