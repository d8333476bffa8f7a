"""Step memory accounting on hand-computed cases: edgert's parts, the torch reference's parts, and the
--adapt-memory plan that chooses what the entropy step adapts."""

import numpy as np
import pytest

from edgert.compilers.adapt_memory import parse_size
from edgert.errors import EdgertError
from edgert.runtime.adapt import make_policy
from edgert.runtime.adapt.memory import traced_peak
from edgert.runtime.engine import Engine

torch = pytest.importorskip("torch")
nn = torch.nn


def test_traced_peak_sees_numpy_buffers():
    def fn():
        a = np.ones(1 << 18, np.float32)  # 1 MiB, freed before the next
        del a
        b = np.ones(1 << 16, np.float32)  # 256 KiB
        return b

    b, peak = traced_peak(fn)
    assert b.nbytes == 1 << 18
    assert (1 << 20) <= peak < (1 << 20) + 16384


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3)).eval()


@pytest.mark.parametrize("chunk", [2, 1])
def test_entropy_step_parts_on_a_hand_counted_model(chunk):
    """Batch 2 through conv(1->2)-BN-relu-linear(32->3): the backward keeps the BN output [2, 2, 4, 4]
    and the logits [2, 3]; Adam keeps m and v for 2 gammas and 2 betas; the gradients are the seed
    [2, 3] and the 2 + 2 parameter gradients; everything float32. Taken one sample at a time
    (chunk 1), it keeps one sample's BN output [1, 2, 4, 4] and logits [1, 3], plus the batch's
    logits [2, 3], and the last seed is [1, 3]."""
    import edgert

    art = edgert.compile(_tiny(), np.zeros((1, 1, 4, 4), np.float32))
    policy = make_policy("entropy", Engine(art), threshold=1.0, guard=False, chunk=chunk)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    policy.run(x)
    policy.run(x)
    m = policy.stats()["step_memory"]["2"]
    if chunk == 2:
        assert m["kept"] == 4 * (2 * 2 * 4 * 4 + 2 * 3)
        assert m["gradients"] == 4 * (2 * 3 + 2 + 2)
    else:
        assert m["kept"] == 4 * (2 * 4 * 4 + 3 + 2 * 3)
        assert m["gradients"] == 4 * (3 + 2 + 2)
    assert m["optimizer"] == 4 * (2 * 2 * 2)
    assert m["gradients"] <= m["transient"] < 16384
    assert m["step_peak"] == m["kept"] + m["optimizer"] + m["transient"]


def test_torch_step_parts_on_a_hand_counted_model():
    """Linear(8 -> 4, no bias) on x [2, 8]: autograd saves x (64 bytes; the weight is a parameter and
    not counted); Adam keeps exp_avg, exp_avg_sq (128 bytes each) and a step scalar (4 bytes); the
    gradient is 128 bytes."""
    from tools.bench.torch_memory import step_memory

    torch.manual_seed(0)
    model = nn.Linear(8, 4, bias=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 8)
    loss_fn = lambda: model(x).square().sum()  # noqa: E731
    opt.zero_grad()
    loss_fn().backward()
    opt.step()  # Adam's state exists from here on
    m = step_memory(loss_fn, model, opt)
    assert m["kept"] == 2 * 8 * 4 + 2 * 4 * 4  # x, and the output saved by square()
    assert m["optimizer"] == 128 + 128 + 4
    assert m["gradients"] == 128
    assert m["gradients"] <= m["transient"] < 4096
    assert m["step_peak"] == m["kept"] + m["optimizer"] + m["transient"]


@pytest.mark.parametrize("text, want", [("32MB", 32 << 20), ("512KB", 512 << 10), ("1.5GB", 3 << 29),
                                        ("65536", 65536), ("8 MiB", 8 << 20), ("100b", 100)])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "MB", "32XB", "-1MB", "0", "3 2MB"])
def test_parse_size_rejects_with_the_form_to_use(text):
    with pytest.raises(EdgertError, match="like 32MB"):
        parse_size(text)


def _deep():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_adapt_memory_adapts_the_deepest_batchnorms_that_fit():
    import edgert
    from edgert.compilers.adapt_memory import estimate

    x = np.zeros((1, 1, 8, 8), np.float32)
    full = edgert.compile(_deep(), x)
    norm = full.manifest["adapt"]["norm"]
    graph = full.graph
    costs = [estimate(graph, norm[-k:], 16)["step_peak"] for k in (1, 2, 3)]
    assert costs[0] < costs[1] < costs[2]
    art = edgert.compile(_deep(), x, adapt_memory=(costs[1] + costs[2]) // 2, adapt_batch=16)
    plan = art.manifest["adapt"]["entropy"]
    assert plan["layers"] == [e["bn"] for e in norm[-2:]]
    assert plan["estimate_bytes"]["step_peak"] == costs[1] and plan["batch"] == 16
    policy = make_policy("entropy", Engine(art), threshold=1.0, guard=False)
    xs = np.random.default_rng(0).standard_normal((2, 16, 1, 8, 8)).astype(np.float32)
    for xb in xs:
        policy.run(xb)
    stats = policy.stats()
    assert stats["adapted_layers"] == plan["layers"] and stats["planned_step_peak_bytes"] == costs[1]
    assert 0 < stats["step_peak_bytes"] <= costs[1]  # the estimate is an upper bound here
    with pytest.raises(EdgertError, match="too small for the entropy step at batch 16"):
        edgert.compile(_deep(), x, adapt_memory=costs[0] - 1, adapt_batch=16)
