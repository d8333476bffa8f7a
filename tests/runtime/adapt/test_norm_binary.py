"""The norm policy on a binary model: BatchNorms folded into integer thresholds are re-derived."""

import numpy as np
import pytest

from edgert.runtime.adapt import make_policy
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_norm import _torch_reference

torch = pytest.importorskip("torch")
nn = torch.nn


def _model() -> "nn.Module":
    from edgert.nn import BinaryConv2d, BinaryLinear

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8),
                      BinaryConv2d(8, 70, 3, padding=1, pad_mode="one"), nn.BatchNorm2d(70), nn.MaxPool2d(2),
                      BinaryConv2d(70, 16, 3, padding=1, pad_mode="zero"), nn.BatchNorm2d(16), nn.Flatten(),
                      BinaryLinear(16 * 3 * 3, 12), nn.BatchNorm1d(12), nn.Linear(12, 5))
    g = torch.Generator().manual_seed(1)
    for bn in (m[1], m[3], m[6], m[9]):
        c = bn.num_features
        bn.weight.data = (torch.rand(c, generator=g) + 0.5) * torch.where(torch.rand(c, generator=g) < 0.2, -1, 1)
        bn.bias.data = torch.randn(c, generator=g) * 0.1
        bn.running_mean = torch.randn(c, generator=g) * 2
        bn.running_var = torch.rand(c, generator=g) * 20 + 5
    return m.eval()


def test_binary_thresholds_follow_the_running_moments():
    import edgert

    x0 = np.zeros((1, 1, 6, 6), np.float32)
    art = edgert.compile(_model(), x0)
    kinds = sorted(e["kind"] for e in art.manifest["adapt"]["norm"])
    assert kinds.count("threshold") >= 1 and not art.manifest["adapt"]["skipped"], kinds
    rng = np.random.default_rng(3)
    xs = [(rng.standard_normal((2, 1, 6, 6)) * 1.5 + 0.7).astype(np.float32) for _ in range(6)]
    policy = make_policy("norm", Engine(art), momentum=0.3, source_weight=0.25, refold_every=1, guard=False)
    source = Engine(art)
    ref = _torch_reference(xs, 0.3, 0.25, _model())
    changed = 0
    for x, want in zip(xs, ref):
        got = policy.run(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        changed += not np.allclose(got, source.run(x), atol=1e-3)
    assert changed >= 4  # the thresholds really moved (the first batch runs on source statistics)
