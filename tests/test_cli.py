"""The CLI as a user runs it: compile a .pt2, run an .npy through it, profile it, list targets; compile
a recurrent NIR graph at a time step and run it."""

import io
import json
import os
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from edgert import cli
from tools.models.digits_cnn import DigitsCNN, save_pt2

EDGERT = [sys.executable, "-m", "edgert.cli"]
NIR = Path(__file__).resolve().parent / "data" / "nir"


def edgert(*args, check=True) -> subprocess.CompletedProcess:
    """The CLI run in this process, as `edgert ARGS` would run: exit code, stdout and stderr (an
    unexpected exception exits 1 with its traceback on stderr). In-process, because a fresh Python
    pays ~6 s of torch and TVM imports per call; test_entry_point runs the real command."""
    argv, env = [str(a) for a in args], dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv, code = sys.argv, ["edgert", *argv], 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except Exception:  # noqa: BLE001 (reported as the real command would report it)
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved
        os.environ.clear()
        os.environ.update(env)  # the CLI sets EDGERT_THREADS for its own process
    ran = subprocess.CompletedProcess(["edgert", *argv], code, out.getvalue(), err.getvalue())
    if check:
        assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


def test_entry_point():
    """`python -m edgert.cli` itself: a listing, and a user error's one line and exit code 2."""
    out = subprocess.run(EDGERT + ["targets"], capture_output=True, text=True)
    assert out.returncode == 0 and "x86-host" in out.stdout, out.stderr
    out = subprocess.run(EDGERT + ["run", "nope.edgert", "--input", "x.npy"], capture_output=True, text=True)
    assert out.returncode == 2 and "error:" in out.stderr and "no such artifact" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    pt2 = save_pt2(model, d / "digits.pt2")
    edgert("compile", pt2, "--target", "x86-host", "-o", d / "digits.edgert")
    return d, model


def test_run_writes_the_models_outputs(compiled):
    d, model = compiled
    x = np.random.default_rng(0).random((7, 1, 8, 8))  # float64 on purpose: the CLI converts floats
    np.save(d / "x.npy", x)
    out = edgert("run", d / "digits.edgert", "--input", d / "x.npy", "--output", d / "y.npy")
    assert "shape (7, 10)" in out.stdout and "measured" in out.stdout
    with torch.no_grad():
        want = model(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(np.load(d / "y.npy"), want, rtol=1e-5, atol=1e-5)


def test_profile_json_counts_macs_by_hand(compiled):
    d, _ = compiled
    report = json.loads(edgert("profile", d / "digits.edgert", "--json", "--repeat", "3").stdout)
    macs = {n["name"]: n["macs"] for n in report["nodes"]}
    # first conv: 16 out channels x 8x8 positions x (1 in channel x 3x3); classifier: 10 x 64
    assert 16 * 64 * 9 in macs.values() and 10 * 64 in macs.values()
    assert report["total"]["macs"] == sum(macs.values())
    assert all(n["latency_s"] is None or n["latency_s"] > 0 for n in report["nodes"])
    assert report["total"]["latency_s"] > 0
    assert sum(n["param_bytes"] for n in report["nodes"]) == report["total"]["param_bytes"]


def test_profile_table_and_targets(compiled):
    d, _ = compiled
    table = edgert("profile", d / "digits.edgert", "--repeat", "3").stdout
    assert "MACs" in table and "total" in table
    assert "x86-host" in edgert("targets").stdout


@pytest.mark.parametrize("args, message", [
    (["compile", "missing.pt2"], "does not exist"),
    (["compile", "{d}/x.npy", "--target", "x86-host"], "unknown kind '.npy'"),
    (["compile", "{d}/digits.pt2", "--target", "nope"], "unknown target 'nope'"),
    (["run", "{d}/nope.edgert", "--input", "{d}/x.npy"], "no such artifact"),
    (["run", "{d}/digits.edgert", "--input", "{d}/bad.npy"], "cannot read --input"),
    (["compile", "{d}/digits.pt2", "--dt", "1e-4"], "only .nir files take one"),
    (["compile", f"{NIR}/lif_norse.nir"], "--dt 1e-4"),
])
def test_user_errors_print_one_line_and_exit_2(compiled, args, message):
    d, _ = compiled
    (d / "bad.npy").write_text("not numpy")
    np.save(d / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    out = edgert(*[a.format(d=d) for a in args], check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error:" in out.stderr and message in out.stderr
    assert "Traceback" not in out.stderr


def test_compile_nir_at_a_time_step_and_run_it(tmp_path):
    """The NIR paper's recurrent Braille graph through `compile --dt` and `run`, spike for spike against
    the NumPy simulation of the NIR graph."""
    import nir

    from tests.compilers.frontends.test_nir import simulate_nir

    src = NIR / "braille_noDelay_bias_zero.nir"
    edgert("compile", src, "--dt", "1e-4", "-o", tmp_path / "b.edgert")
    x = (np.random.default_rng(4).random((100, 2, 12)) < 0.3).astype(np.float32)  # [time, batch, 12]
    np.save(tmp_path / "x.npy", x)
    edgert("run", tmp_path / "b.edgert", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    want = simulate_nir(nir.read(str(src)), x, 1e-4)["output"]
    assert want.sum() > 50
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_compile_onnx_shift_model_with_a_calibration_batch(tmp_path):
    """±2^p ONNX weights become shift layers with 8-bit activations from --calibration; the conversion's
    error is printed, and the artifact stays within 3% of onnxruntime on positive inputs."""
    import onnxruntime

    from tools.models.shift_onnx import INPUT_SHAPE, shift_onnx

    rng = np.random.default_rng(7)
    shift_onnx(tmp_path / "s.onnx", rng)
    np.save(tmp_path / "calib.npy", rng.random((8, *INPUT_SHAPE)).astype(np.float32))
    out = edgert("compile", tmp_path / "s.onnx", "--calibration", tmp_path / "calib.npy", "-o", tmp_path / "s.edgert")
    assert "became shift layers" in out.stdout and "relative error" in out.stdout
    x = rng.random((5, *INPUT_SHAPE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    edgert("run", tmp_path / "s.edgert", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    want = onnxruntime.InferenceSession(str(tmp_path / "s.onnx")).run(None, {"x": x})[0]
    got = np.load(tmp_path / "y.npy")
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.03
