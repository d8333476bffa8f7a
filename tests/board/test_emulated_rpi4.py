"""The rpi4 artifact is an aarch64 library, and on an emulated aarch64 board it gives the host's outputs.

The board is qemu-user running Debian's arm64 Python 3.11 from a sysroot, with the aarch64 wheels of
the runtime's dependencies (tools/board/setup_aarch64.sh, which `make test` runs first).
"""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import edgert
from tools.models.digits_cnn import DigitsCNN

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "build" / "aarch64"
EM_AARCH64 = 183  # ELF e_machine of AArch64
SETUP = "run `make test` (or `bash tools/board/setup_aarch64.sh`) to prepare it"


def elf_machine(data: bytes) -> tuple[int, int]:
    """(ELF class: 2 = 64-bit, e_machine) of a little-endian ELF file."""
    assert data[:4] == b"\x7fELF" and data[5] == 1, "not a little-endian ELF file"
    return data[4], int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip(f"the aarch64 cross compiler is not installed; {SETUP}")
    d = tmp_path_factory.mktemp("board")
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    example = np.zeros((1, 1, 8, 8), np.float32)
    paths = {t: edgert.compile(model, example, target=t).save(d / f"digits-{t}.edgert")
             for t in ("rpi4", "x86-host")}
    return d, paths, model


def test_rpi4_library_is_an_aarch64_shared_object(artifacts):
    _, paths, _ = artifacts
    with zipfile.ZipFile(paths["rpi4"]) as z:
        libs = [n for n in z.namelist() if n.startswith("lib/")]
        assert libs
        for name in libs:
            data = z.read(name)
            assert elf_machine(data) == (2, EM_AARCH64), name
            assert int.from_bytes(data[16:18], "little") == 3  # ET_DYN: a shared object
    with zipfile.ZipFile(paths["x86-host"]) as z:
        assert elf_machine(z.read("lib/stage0.so"))[1] == 62  # EM_X86_64: the host's is not


def test_rpi4_artifact_refuses_to_run_on_the_host(artifacts):
    _, paths, _ = artifacts
    with pytest.raises(edgert.errors.ArtifactTargetError, match="aarch64"):
        edgert.load(paths["rpi4"])


@pytest.mark.slow
def test_rpi4_artifact_on_emulated_board_matches_host(artifacts):
    python = BOARD / "sysroot" / "usr" / "bin" / "python3.11"
    if shutil.which("qemu-aarch64") is None or not python.exists() or not (BOARD / "site" / ".complete").exists():
        pytest.skip(f"the emulated aarch64 board (qemu-aarch64, {BOARD}) is not prepared; {SETUP}")
    d, paths, model = artifacts
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    np.save(d / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=f"{REPO}{os.pathsep}{BOARD / 'site'}", PYTHONNOUSERSITE="1")
    out = subprocess.run(["qemu-aarch64", "-L", str(BOARD / "sysroot"), str(python),
                          str(REPO / "tools" / "board" / "run_artifact.py"), str(paths["rpi4"]),
                          str(d / "x.npy"), str(d / "y.npy")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["machine"] == "aarch64" and not info["torch_loaded"]
    board = np.load(d / "y.npy")
    host = edgert.load(paths["x86-host"]).run(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()  # the independent reference
    assert board.shape == host.shape == (5, 10)
    np.testing.assert_allclose(board, host, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(board, ref, rtol=1e-5, atol=1e-5)
