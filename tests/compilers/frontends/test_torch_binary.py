"""edgert.nn binary layers through the torch frontend, the threshold pass and the compiled artifact."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from torch import nn

import edgert
from edgert.compilers.compile import optimize
from edgert.compilers.frontends.torch import from_torch
from edgert.nn import BinaryActivation, BinaryConv2d, BinaryLinear
from edgert.ops.reference import run_graph_ref
from tools.models.binary_digits import BinaryDigits


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, some BN scales negative and one zero (flip and saturation)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 3)
            m.running_var.uniform_(1, 5)
            m.weight.data.normal_()
            m.weight.data[0] = 0.0
            m.bias.data.normal_()
    return model.eval()


def _spread() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 70, 3, padding=1), nn.BatchNorm2d(70),
        BinaryConv2d(70, 66, 3, padding=1, pad_mode="one", scale=True), nn.BatchNorm2d(66), nn.MaxPool2d(2),
        BinaryConv2d(66, 66, 3, stride=2, padding=1, pad_mode="zero", groups=2, bias=True), nn.BatchNorm2d(66),
        BinaryConv2d(66, 30, 1, groups=3), nn.BatchNorm2d(30), BinaryActivation(),
        nn.Flatten(), BinaryLinear(30 * 2 * 2, 10, scale=True), nn.BatchNorm1d(10), BinaryLinear(10, 3))


def test_converts_and_fuses_with_exact_parity():
    model = _randomize_bn(_spread())
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g = from_torch(model, x)
    fused = optimize(g)
    ops = [n.op for n in fused.nodes]
    assert ops.count("binary_conv2d") == 3 and ops.count("binary_dense") == 2
    assert "binary_max_pool2d" in ops and ops.count("batch_norm") <= 2
    want = model(x).detach().numpy()
    assert_array_equal(run_graph_ref(g, {"input": x.numpy()})[0], want)
    assert_array_equal(run_graph_ref(fused, {"input": x.numpy()})[0], want)


def test_reference_model_end_to_end_through_pt2_and_artifact(tmp_path):
    model = _randomize_bn(BinaryDigits())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(ep, tmp_path / "b.pt2")
    art = edgert.compile(tmp_path / "b.pt2", target="x86-host")
    engine = edgert.load(art.save(tmp_path / "b.edgert"))
    want = model(x).detach().numpy()
    np.testing.assert_allclose(engine.run(x.numpy()), want, rtol=1e-5, atol=1e-5)  # float first/last layers
    ops = [n.op for n in art.graph.nodes]
    assert ops.count("binary_conv2d") == 2 and "binary_max_pool2d" in ops and "binary_dense" in ops
    assert [n.output_kind for n in art.graph.nodes if n.op == "binary_conv2d"] == ["bits", "bits"]
    assert "bit_flatten" in ops and "flatten" not in ops  # the binary core stays packed into the dense


def test_rejects_unknown_pad_value():
    from edgert.nn import binary_conv2d

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 1, 3, 3))

        def forward(self, x):
            return binary_conv2d(x, self.w, None, None, [1, 1], [1, 1, 1, 1], 0.5, 1)

    with pytest.raises(edgert.errors.UnsupportedOpError, match="pad_value"):
        from_torch(Odd(), (2, 1, 5, 5))


def test_depthwise_chain_runs_as_torch(tmp_path):
    """Depthwise binary convs through compile and the engine: zero and +1 padding, stride 2, one into
    another (the first writes one bit per word for the next), into a pointwise conv, and one with float
    output; the channel kernel runs them all."""
    from edgert.ops.binary import conv

    model = _randomize_bn(nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16),
        BinaryConv2d(16, 16, 3, padding=1, pad_mode="zero", groups=16), nn.BatchNorm2d(16),
        BinaryConv2d(16, 16, 3, stride=2, padding=1, pad_mode="one", groups=16), nn.BatchNorm2d(16),
        BinaryConv2d(16, 24, 1), nn.BatchNorm2d(24),
        BinaryConv2d(24, 24, 3, padding=1, pad_mode="zero", groups=24, scale=True), nn.BatchNorm2d(24),
        nn.Flatten(), nn.Linear(24 * 4 * 4, 5)), seed=3)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    art = edgert.compile(model, x.numpy())
    engine = edgert.load(art.save(tmp_path / "d.edgert"))
    want = model(x).detach().numpy()
    np.testing.assert_allclose(engine.run(x.numpy()), want, rtol=1e-5, atol=1e-5)  # the float layers round
    convs = [n for n in art.graph.nodes if n.op == "binary_conv2d"]
    assert [(n.groups, n.output_kind, n.out_groups) for n in convs] == [(16, "bits", 16), (16, "bits", 1),
                                                                        (1, "bits", 24), (24, "float", 1)]
    assert [conv.kernel_kind(engine.artifact.params[n.inputs[1]].shape, n.in_channels, n.groups, n.output_kind, 8)
            for n in convs if n.groups > 1] == ["channels"] * 3
