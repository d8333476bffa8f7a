"""Trained-model parity: torch module -> (torch or ONNX frontend) -> artifact file -> Engine == torch."""

import numpy as np
import pytest
import torch

import edgert
from tests.zoo import SLOW, ZOO

NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(ZOO)]


def _compare(engine, model, example: torch.Tensor, batch: int) -> None:
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn((batch,) + tuple(example.shape[1:]), generator=gen)
    with torch.no_grad():
        want = model(x).numpy()
    got = engine.run(x.numpy())
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_torch_frontend_artifact_matches_torch(name, tmp_path):
    model, example = ZOO[name]()
    path = edgert.compile(model, example.numpy()).save(tmp_path / f"{name}.edgert")
    engine = edgert.load(path)
    for batch in (1, 5):
        _compare(engine, model, example, batch)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_frontend_artifact_matches_torch(name, tmp_path):
    model, example = ZOO[name]()
    onnx_path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (example.repeat(2, *([1] * (example.dim() - 1))),), str(onnx_path),
                      input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    engine = edgert.load(edgert.compile(onnx_path).save(tmp_path / f"{name}.edgert"))
    for batch in (1, 3):
        _compare(engine, model, example, batch)
