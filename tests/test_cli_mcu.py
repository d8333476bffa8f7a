"""The microcontroller path as a user runs it: compile for stm32h7, run on the emulated core, profile
the firmware, export the C and build it with the host's cc against the documented header."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from tests.test_cli import edgert
from tools.models.digits_cnn import DigitsCNN, save_pt2

pytestmark = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                reason="needs the ARM toolchain and QEMU (tools/board/setup_mcu.sh)")

# A user's main, written against model.h alone: one sample from stdin (raw float32), outputs to stdout.
USER_MAIN = r"""
#include <stdio.h>
#include "model.h"
int main(void) {
  static float in[EDGERT_INPUT_SIZE], out[EDGERT_OUTPUT_SIZE];
  if (fread(in, sizeof(float), EDGERT_INPUT_SIZE, stdin) != EDGERT_INPUT_SIZE) return 1;
  edgert_model_reset();
  if (edgert_model_run(in, out) != 0) return 2;
  return fwrite(out, sizeof(float), EDGERT_OUTPUT_SIZE, stdout) == EDGERT_OUTPUT_SIZE ? 0 : 3;
}
"""


@pytest.fixture(scope="module")
def mcu(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcu")
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    out = edgert("compile", save_pt2(model, d / "digits.pt2"), "--target", "stm32h7", "-o", d / "m7.edgert")
    assert "C firmware for mps2-an500" in out.stdout and "measured from the linked image" in out.stdout
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    return d, x, want


def test_run_on_the_emulated_core(mcu):
    d, x, want = mcu
    np.save(d / "x.npy", x)
    out = edgert("run", d / "m7.edgert", "--input", d / "x.npy", "--output", d / "y.npy")
    assert "emulated" in out.stderr and "mps2-an500" in out.stderr
    assert "emulated instruction count" in out.stdout and "latency" not in out.stdout
    np.testing.assert_allclose(np.load(d / "y.npy"), want, rtol=1e-4, atol=1e-5)


def test_profile_reports_the_linked_image(mcu):
    d, _, _ = mcu
    report = json.loads(edgert("profile", d / "m7.edgert", "--json").stdout)
    fw = report["firmware"]
    assert fw["source"] == "measured from the linked image (arm-none-eabi-size)"
    assert fw["flash_bytes"] > fw["weight_bytes"] > 0 and fw["ram_bytes"] >= fw["arena_bytes"] + fw["stack_bytes"]
    assert fw["arena_bytes"] >= fw["liveness_bytes"] > 0
    assert fw["emulated_instructions"] > 0 and "emulated instruction count" in fw["instructions_label"]
    assert all("not measured here" in n["latency_label"] for n in report["nodes"])
    text = edgert("profile", d / "m7.edgert").stdout
    assert "firmware for mps2-an500" in text and "emulated instruction count" in text


def test_export_c_builds_with_the_host_cc(mcu, tmp_path):
    d, x, want = mcu
    out = edgert("export-c", d / "m7.edgert", "-o", tmp_path / "c")
    assert "edgert_model_run" in out.stdout
    (tmp_path / "main.c").write_text(USER_MAIN)
    src = [str(p) for p in sorted((tmp_path / "c").rglob("*.c"))]
    subprocess.run(["cc", "-std=c99", "-O2", "-I", str(tmp_path / "c"), *src, str(tmp_path / "main.c"), "-lm",
                    "-o", str(tmp_path / "app")], check=True)
    for xi, wi in zip(x, want):
        r = subprocess.run([str(tmp_path / "app")], input=xi.tobytes(), capture_output=True, check=True)
        np.testing.assert_allclose(np.frombuffer(r.stdout, np.float32), wi, rtol=1e-4, atol=1e-5)


def test_mcu_errors_are_clear(mcu, tmp_path):
    d, _, _ = mcu
    out = edgert("export-c", d / "digits.pt2", "-o", tmp_path / "c", check=False)
    assert out.returncode != 0
    out = edgert("compile", d / "digits.pt2", "--target", "stm32h7", "--keep-bn", "-o", tmp_path / "k.edgert",
                 check=False)
    assert out.returncode == 2 and "inference only" in out.stderr
    x = np.zeros((2, 1, 9, 9), np.float32)
    np.save(tmp_path / "bad.npy", x)
    out = edgert("run", d / "m7.edgert", "--input", tmp_path / "bad.npy", check=False)
    assert out.returncode == 2 and "expects [N, 1, 8, 8]" in out.stderr
