"""from_torch: zoo models run through the reference interpreter match torch; errors name op, module and fix."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgert import ir
from edgert.compilers.frontends.torch import from_torch
from edgert.errors import EdgertError, UnsupportedOpError
from edgert.ops.reference import run_graph_ref
from tests.zoo import ZOO


def assert_matches_torch(graph: ir.Graph, model: nn.Module, example: torch.Tensor, batches=(1, 3)) -> None:
    for batch in batches:
        gen = torch.Generator().manual_seed(100 + batch)
        x = torch.randn((batch,) + tuple(example.shape[1:]), generator=gen)
        with torch.no_grad():
            want = model(x)
        want = want if isinstance(want, tuple) else (want,)
        got = run_graph_ref(graph, {"input": x.numpy()})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)


def _dynamic_export(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(model, (torch.cat([example, example]),),
                               dynamic_shapes=({0: torch.export.Dim("batch")},))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_matches_torch_at_any_batch(name):
    model, example = ZOO[name]()
    graph = from_torch(model, example)
    assert graph.inputs == (("input", ir.TensorSpec((None,) + tuple(example.shape[1:]))),)
    assert graph.outputs == ("output",)
    assert all(a.dtype == np.float32 for a in graph.params.values())
    assert_matches_torch(graph, model, example)


def test_names_follow_the_module_tree():
    model, example = ZOO["plain"]()
    graph = from_torch(model, example)
    assert set(graph.params) == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    conv = graph.nodes[0]
    assert isinstance(conv, ir.Conv2d) and conv.name.startswith("features.0.0.")
    assert conv.inputs == ("input", "features.0.0.weight")
    assert graph.nodes[-1].name.startswith("fc.") and graph.nodes[-1].output == "output"


def test_example_may_be_a_tensor_an_array_or_a_shape():
    model, example = ZOO["strided"]()
    from_tensor = from_torch(model, example)
    assert from_torch(model, example.numpy().astype(np.float64)) == from_tensor
    assert from_torch(model, tuple(example.shape)) == from_tensor


def test_pt2_file_round_trip(tmp_path):
    model, example = ZOO["residual"]()
    path = tmp_path / "residual.pt2"
    torch.export.save(_dynamic_export(model, example), path)
    graph = from_torch(str(path))
    assert graph == from_torch(model, example)
    assert_matches_torch(graph, model, example)


@pytest.mark.parametrize("name", ["plain", "multibranch"])
def test_core_aten_program_matches_torch(name):
    """After run_decompositions: convolution, addmm(permute(W)), max_pool2d_with_indices, _softmax ..."""
    model, example = ZOO[name]()
    ep = _dynamic_export(model, example).run_decompositions()
    assert_matches_torch(from_torch(ep), model, example)


class Assorted(nn.Module):
    """Converters the zoo leaves out: 'same' padding, clamps, constant adds, BN without affine, squeezes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, padding="same")  # even kernel: padding (1, 1, 2, 2)
        self.drop = nn.Dropout2d(0.3)
        self.scale = nn.Parameter(torch.randn(1, 4, 1, 1, generator=torch.Generator().manual_seed(1)))
        self.bn = nn.BatchNorm2d(4, affine=False)
        self.hardtanh = nn.Hardtanh(-0.5, 0.5)
        self.pool = nn.AdaptiveAvgPool2d((3, 2))  # from 5x3: overlapping windows
        self.fc = nn.Linear(12 * 3 * 2, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.bn(self.drop(self.conv(x)) + self.scale)
        x = torch.cat([self.hardtanh(x), torch.clamp(x, min=0.1), F.relu6(x)], dim=1)
        x = F.max_pool2d(x + torch.tensor([0.25]) + 1.0, 2, stride=1, dilation=2)
        x = self.pool(x) + x.mean((2, 3), keepdim=True)
        y = x.flatten(1).unsqueeze(1).squeeze(1)
        return torch.softmax(self.fc(y), dim=-1), y


def test_assorted_ops_and_two_outputs_match_torch():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Assorted().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2.0)
    example = torch.randn(1, 3, 7, 5, generator=torch.Generator().manual_seed(2))
    graph = from_torch(model, example)
    assert graph.outputs == ("output_0", "output_1")
    assert {"lifted_tensor_0", "bn.weight", "bn.bias", "scale"} <= set(graph.params)
    conv = next(n for n in graph.nodes if isinstance(n, ir.Conv2d))
    assert conv.padding == (1, 1, 2, 2)
    assert_matches_torch(graph, model, example)


class SoftplusAndSort(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return torch.sort(y, dim=1).values


def test_unsupported_ops_are_reported_together_with_module_and_line():
    with pytest.raises(UnsupportedOpError) as info:
        from_torch(SoftplusAndSort(), (1, 3, 8, 8))
    msg = str(info.value)
    softplus = next(line for line in msg.splitlines() if "aten.softplus" in line)
    assert ("module 'act' (Softplus)" in softplus and "test_torch.py:" in softplus
            and "self.act(self.conv(x))" in softplus)
    assert "aten.sort" in msg and "torch.sort(y, dim=1)" in msg
    assert "Supported: " in msg and "aten.conv2d" in msg and "nn.Softplus -> nn.ReLU" in msg


class AddAlpha(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, torch.relu(x), alpha=2)


class FlattenBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).reshape(-1)


class CatBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.relu(x)], dim=0)


@pytest.mark.parametrize("model,expected", [
    (AddAlpha(), "alpha=2"),
    (FlattenBatch(), "changes the batch dimension 0"),
    (CatBatch(), "concatenation along the batch axis"),
])
def test_unsupported_uses_of_supported_ops_name_the_fix(model, expected):
    with pytest.raises(UnsupportedOpError, match=expected):
        from_torch(model, (1, 2, 4, 4))


class FixedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.view(1, -1))  # per-sample only at batch 1


class BatchOfTwo(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(2.0).view(2, 1, 1, 1)  # specializes the batch to 2


@pytest.mark.parametrize("model,batch", [(FixedBatch(), 1), (BatchOfTwo(), 2)])
def test_model_that_needs_a_fixed_batch_compiles_for_it_with_a_warning(model, batch):
    example = torch.randn(batch, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    with pytest.warns(UserWarning, match=f"fixed batch of {batch}"):
        graph = from_torch(model, example)
    assert graph.inputs[0][1].shape == (batch, 2, 3, 3)
    assert_matches_torch(graph, model, example, batches=(batch,))


class Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


def test_model_that_fails_to_export_gives_an_edgert_error():
    with pytest.raises(EdgertError, match="torch.export could not trace the model"):
        from_torch(Untraceable(), (1, 2, 3, 3))


def test_module_without_example_input_is_an_edgert_error():
    with pytest.raises(EdgertError, match="needs example_input"):
        from_torch(ZOO["plain"]()[0])


@pytest.mark.parametrize("filename,content,expected", [
    ("model.pth", b"not a pt2", "reads .pt2 files"),
    ("model.pt2", b"garbage, not a zip archive", "not a readable ExportedProgram"),
    ("model.pt2", None, "no such file"),
])
def test_bad_files_give_edgert_errors(tmp_path, filename, content, expected):
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EdgertError, match=expected):
        from_torch(path)


def test_truncated_pt2_file_gives_an_edgert_error(tmp_path):
    model, example = ZOO["strided"]()
    path = tmp_path / "strided.pt2"
    torch.export.save(_dynamic_export(model, example), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EdgertError, match="not a readable ExportedProgram"):
        from_torch(path)
