"""The modern edge ops end to end: each op in a small torch module compiled for x86-host through the
torch frontend (checked against torch) and through the ONNX frontend (checked against onnxruntime).
Many ops share one module with several outputs, so each group costs one TVM build per frontend."""

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgert

BATCHES = (1, 3)


def _outputs(engine, x: np.ndarray) -> list[np.ndarray]:
    got = engine.run(x)
    return got if isinstance(got, list) else [got]


def _close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale, err_msg=f"output {k}")


def check_torch(model: nn.Module, example: torch.Tensor, tmp_path) -> None:
    """torch frontend -> x86-host artifact -> Engine, against torch, at batch 1 and 3."""
    engine = edgert.load(edgert.compile(model, example.numpy()).save(tmp_path / "torch.edgert"))
    for batch in BATCHES:
        x = torch.randn((batch,) + tuple(example.shape[1:]), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x)
        want = list(want) if isinstance(want, tuple) else [want]
        _close(_outputs(engine, x.numpy()), [w.numpy() for w in want])


def check_onnx(model: nn.Module, example: torch.Tensor, tmp_path) -> None:
    """torch.onnx.export -> ONNX frontend -> x86-host artifact -> Engine, against onnxruntime."""
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.cat([example, example]),), str(path), input_names=["input"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    engine = edgert.load(edgert.compile(path).save(tmp_path / "onnx.edgert"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in BATCHES:
        x = np.random.default_rng(batch).standard_normal((batch,) + tuple(example.shape[1:])).astype(np.float32)
        _close(_outputs(engine, x), session.run(None, {"input": x}))


def _seeded(cls, *args):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls(*args).eval()


class Elementwise(nn.Module):
    """mul/sub/div between activations, with parameters and with numbers; the new activations, each
    also straight after a conv (where TVM fuses it into the conv's epilogue)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(3, 4, 3, padding=1) for _ in range(8))
        self.acts = [nn.SiLU(), nn.Hardswish(), nn.Hardsigmoid(), nn.GELU(), nn.GELU(approximate="tanh"),
                     nn.LeakyReLU(0.1), nn.PReLU(4), nn.PReLU()]
        self.prelus = nn.ModuleList(a for a in self.acts if isinstance(a, nn.PReLU))
        self.scale = nn.Parameter(torch.randn(1, 6, 1, 1))
        self.shift = nn.Parameter(torch.randn(6, 1, 1))
        with torch.no_grad():
            for p in self.prelus:
                p.weight.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x)
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True))
        outs = [y * self.scale, y - self.shift, y / (self.scale.abs() + 0.5), 1.0 - y, y / 3.0, y * 2.0 - 0.5,
                y * gate, gate - y, y / (torch.sigmoid(y) + 1.0), y * y]
        outs += [act(conv(x)) for act, conv in zip(self.acts, self.convs)]
        return tuple(outs)


@pytest.fixture(scope="module")
def elementwise():
    return _seeded(Elementwise), torch.randn(1, 3, 7, 6, generator=torch.Generator().manual_seed(5))


def test_elementwise_through_torch(elementwise, tmp_path):
    check_torch(*elementwise, tmp_path)


def test_elementwise_through_onnx(elementwise, tmp_path):
    check_onnx(*elementwise, tmp_path)
