"""`edgert run --adapt`: the input is a stream, adapted in chunks; state is saved and loaded as .npz."""

import json

import numpy as np
import pytest
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


@pytest.mark.slow  # three compiles through the CLI (~11 s in-process)
def test_compile_adapters_then_run_the_adapter_policy(tmp_path):
    from tools.models.digits_cnn import digits_split

    torch.manual_seed(0)
    pt2 = save_pt2(DigitsCNN().eval(), tmp_path / "digits.pt2")
    xtr, ytr, xte, _ = digits_split()
    np.savez(tmp_path / "source.npz", x=xtr[:200], y=ytr[:200])
    np.save(tmp_path / "x.npy", xte[:12])
    bad = edgert("compile", pt2, "--adapter-data", tmp_path / "source.npz", check=False)
    assert bad.returncode == 2 and "add --adapters" in bad.stdout + bad.stderr
    small = edgert("compile", pt2, "--adapters", "--adapter-rank", "2", "--adapt-memory", "2KB", check=False)
    assert small.returncode != 0 and "too small for the adapter step" in small.stdout + small.stderr
    out = edgert("compile", pt2, "-o", tmp_path / "id.edgert", "--adapters", "--adapter-rank", "2",
                 "--adapt-memory", "13KB")
    said = " ".join(out.stdout.split())  # the console wraps long lines
    assert "3 side blocks, the device trains the last 1" in said and "start at identity" in said
    out = edgert("compile", pt2, "-o", tmp_path / "ad.edgert", "--adapters", "--adapter-data",
                 tmp_path / "source.npz", "--adapter-steps", "50")
    assert "step 50/50" in out.stdout and "warmed up 50 steps on 200 samples" in out.stdout
    out = edgert("run", tmp_path / "ad.edgert", "-i", tmp_path / "x.npy", "--adapt", "adapter",
                 "--adapt-batch", "4")
    stats = json.loads(out.stdout.split("adaptation: ")[1].splitlines()[0])
    assert stats["policy"] == "adapter" and stats["updates"] == 3 and stats["step_memory"]["step_peak"] > 0
    out = edgert("run", tmp_path / "id.edgert", "-i", tmp_path / "x.npy", "--adapt", "adapter")  # from identity
    assert json.loads(out.stdout.split("adaptation: ")[1].splitlines()[0])["updates"] == 12
