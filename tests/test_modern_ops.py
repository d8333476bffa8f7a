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
from edgert import ir

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


class Layout(nn.Module):
    """transpose/permute, constant pad, mean/sum over axes (keepdim both ways), layer norm over the
    last axes with and without affine parameters; a zero pad before a strided conv (Keras 'same')."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 3, stride=2)
        self.norms = nn.ModuleList([nn.LayerNorm(30), nn.LayerNorm(30, elementwise_affine=False),
                                    nn.LayerNorm((5, 6)), nn.LayerNorm(30, bias=False)])
        with torch.no_grad():
            for m in self.norms:
                for p in m.parameters():
                    p.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seq = x.flatten(2)  # [N, 4, 30]
        return (x.permute(0, 2, 3, 1), x.transpose(1, 3), seq.transpose(1, 2) * 2.0,
                F.pad(x, (1, 2, 0, 1)), F.pad(x, (1, 1, 2, 0), value=0.5), F.pad(seq, (0, 3, 1, 0)),
                self.conv(F.pad(x, (0, 1, 0, 1))),
                x.mean(1, keepdim=True), x.mean(-1), x.sum((1, 3), keepdim=True), seq.sum(2), x.mean((2, 3)),
                self.norms[0](seq), self.norms[1](seq), self.norms[2](x), self.norms[3](seq.relu()))


@pytest.fixture(scope="module")
def layout():
    return _seeded(Layout), torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(6))


def test_layout_ops_through_torch(layout, tmp_path):
    check_torch(*layout, tmp_path)


def test_layout_ops_through_onnx(layout, tmp_path):
    check_onnx(*layout, tmp_path)


def test_zero_pad_before_a_conv_folds_into_its_padding(layout, tmp_path):
    from edgert.compilers.frontends.onnx import from_onnx
    from edgert.compilers.frontends.torch import from_torch

    model, example = layout
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (example,), str(path), input_names=["input"])
    for graph in (from_torch(model, example), from_onnx(path)):
        conv = next(n for n in graph.nodes if isinstance(n, ir.Conv2d))
        assert conv.padding == (0, 0, 1, 1) and conv.inputs[0] == "input"
        assert sum(isinstance(n, ir.Pad) for n in graph.nodes) == 3  # the other pads stay


class Temporal(nn.Module):
    """conv1d on [N, C, L]: padding, 'same', stride, dilation, groups, no bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(4, 6, 3, padding=1)
        self.b = nn.Conv1d(6, 6, 4, padding="same", groups=2, bias=False)
        self.c = nn.Conv1d(6, 5, 3, stride=2, dilation=2, padding=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = F.relu(self.a(x))
        z = self.b(y)
        return z, self.c(z)


class Upsampling(nn.Module):
    """conv_transpose2d (stride, padding, output_padding, bias or none), nearest and bilinear upsampling
    (align_corners both ways, by scale factor and by size)."""

    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.up2 = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.up3 = nn.ConvTranspose2d(3, 2, (3, 2), stride=(1, 3), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.up1(x), self.up2(x), self.up3(x), F.interpolate(x, scale_factor=2, mode="nearest"),
                nn.Upsample(scale_factor=3)(x), F.interpolate(x, size=(10, 7), mode="nearest"),
                F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
                F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                F.interpolate(x, size=(7, 11), mode="bilinear", align_corners=False),
                F.interpolate(x, size=(7, 11), mode="bilinear", align_corners=True))


@pytest.fixture(scope="module")
def temporal():
    return _seeded(Temporal), torch.randn(1, 4, 17, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def upsampling():
    return _seeded(Upsampling), torch.randn(1, 3, 5, 4, generator=torch.Generator().manual_seed(8))


def test_conv1d_through_torch(temporal, tmp_path):
    check_torch(*temporal, tmp_path)


def test_conv1d_through_onnx(temporal, tmp_path):
    check_onnx(*temporal, tmp_path)


def test_upsampling_through_torch(upsampling, tmp_path):
    check_torch(*upsampling, tmp_path)


def test_upsampling_through_onnx(upsampling, tmp_path):
    check_onnx(*upsampling, tmp_path)
