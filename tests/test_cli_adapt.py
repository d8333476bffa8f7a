"""`edgert run --adapt`: the input is a stream, adapted in chunks; state is saved and loaded as .npz."""

import json

import numpy as np
import torch

from tests.test_cli import edgert
from tools.models.digits_cnn import DigitsCNN, save_pt2


def test_run_adapt_norm_streams_and_keeps_state(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    pt2 = save_pt2(model, tmp_path / "digits.pt2")
    edgert("compile", pt2, "-o", tmp_path / "digits.edgert")
    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["run", tmp_path / "digits.edgert", "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npy",
            "--adapt", "norm", "--adapt-batch", "2", "--adapt-state", tmp_path / "s.npz"]
    out = edgert(*args)
    stats = json.loads(out.stdout.split("adaptation: ")[1].splitlines()[0])
    assert stats["policy"] == "norm" and stats["samples"] == 20 and stats["updates"] == 10
    y = np.load(tmp_path / "y.npy")
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y[:8], want[:8], rtol=1e-5, atol=1e-5)  # source until the first re-fold
    assert np.abs(y[8:] - want[8:]).max() > 1e-3                         # then the adapted statistics
    saved = dict(np.load(tmp_path / "s.npz"))
    edgert(*args)  # starts from the saved state
    assert any(not np.allclose(saved[k], v) for k, v in np.load(tmp_path / "s.npz").items())
    bad = edgert("run", tmp_path / "digits.edgert", "-i", tmp_path / "x.npy", "--adapt", "nope", check=False)
    assert bad.returncode == 2 and "choose one of" in bad.stdout + bad.stderr


def test_compile_adapt_memory_plans_the_entropy_step(tmp_path):
    torch.manual_seed(0)
    pt2 = save_pt2(DigitsCNN().eval(), tmp_path / "digits.pt2")
    out = edgert("compile", pt2, "-o", tmp_path / "d.edgert", "--adapt-memory", "320KB", "--adapt-batch", "16")
    assert "entropy step: adapts the last 1 of 3 BatchNorms" in out.stdout and "at batch 16" in out.stdout
    bad = edgert("compile", pt2, "-o", tmp_path / "e.edgert", "--adapt-memory", "lots", check=False)
    assert bad.returncode != 0 and "like 32MB" in bad.stdout + bad.stderr
    small = edgert("compile", pt2, "-o", tmp_path / "e.edgert", "--adapt-memory", "1KB", check=False)
    assert small.returncode != 0 and "too small for the entropy step" in small.stdout + small.stderr
