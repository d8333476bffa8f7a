"""Build emitted C with the host's compiler and run it: the tests' path to every C kernel, and the
check that `edgert export-c` output builds with a plain C99 compiler."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from edgert.compilers.backends.c.emit import CModel
from edgert.errors import EdgertError

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def write_sources(files: dict[str, str], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return out


def build_host(model: CModel, out_dir: str | Path, cc: str = "cc", sanitize: bool = True,
               opt: str = "-O1") -> Path:
    """Compile model + kernels + the host test main (board/host_main.c) into ``out_dir/model``."""
    if shutil.which(cc) is None:
        raise EdgertError(f"C compiler {cc!r} is not on PATH; install gcc or clang")
    out = write_sources(model.files, out_dir)
    main = resources.files("edgert.compilers.backends.c").joinpath("board/host_main.c").read_text()
    (out / "host_main.c").write_text(main)
    objs = []
    for rel in [r for r in model.files if r.endswith(".c")] + ["host_main.c"]:
        obj = out / (rel.replace("/", "_") + ".o")
        cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", opt, "-g",
               "-I", str(out), "-c", str(out / rel), "-o", str(obj)]
        cmd += model.flags.get(rel, []) + (SANITIZE if sanitize else [])
        _run(cmd)
        objs.append(str(obj))
    exe = out / "model"
    _run([cc, *objs, "-o", str(exe), "-lm"] + (SANITIZE if sanitize else []))
    return exe


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise EdgertError(f"C build failed: {' '.join(cmd)}\n{r.stderr.strip()}")


def run_host(exe: str | Path, x: np.ndarray, output_size: int) -> np.ndarray:
    """Run records x [N, ...] (each one sample, or one time step) through the built model: [N, output_size]."""
    x = np.ascontiguousarray(x, np.float32)
    with tempfile.TemporaryDirectory(prefix="edgert-c-") as d:
        fin, fout = Path(d) / "input.bin", Path(d) / "output.bin"
        fin.write_bytes(np.uint32(x.shape[0]).tobytes() + x.tobytes())
        r = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise EdgertError(f"the host build of the model failed with code {r.returncode}:\n{r.stderr[-4000:]}")
        return np.frombuffer(fout.read_bytes(), np.float32).reshape(x.shape[0], output_size)
