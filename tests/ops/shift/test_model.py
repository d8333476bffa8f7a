"""Shift models end to end: torch module -> artifact -> Engine, exact where the arithmetic is integer."""

import numpy as np
import pytest
import torch

import edgert
from edgert.compilers.passes.select_shift_path import select_shift_path
from edgert.nn import ShiftConv2d, ShiftLinear
from edgert.runtime.profile import node_costs
from tools.models.digits_cnn import DigitsCNN
from tools.models.shift_digits import ShiftDigitsCNN, calibrated


@pytest.mark.parametrize("bits, zero", [(3, False), (4, True), (5, False)])
def test_all_shift_model_is_bit_exact(bits, zero, tmp_path):
    torch.manual_seed(bits)
    model = calibrated(torch.nn.Sequential(
        ShiftConv2d(2, 8, 3, padding=1, bits=bits, zero=zero), torch.nn.ReLU(),
        ShiftConv2d(8, 8, 3, stride=2, groups=2, bits=bits, zero=zero), torch.nn.ReLU(), torch.nn.Flatten(),
        ShiftLinear(8 * 3 * 3, 7, bits=bits, zero=zero)), (2, 7, 7))
    x = torch.rand(5, 2, 7, 7)
    engine = edgert.load(edgert.compile(model, x.numpy()).save(tmp_path / "s.edgert"))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(engine.run(x.numpy()), want)


def test_reference_model_stores_3_bit_weights_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = calibrated(ShiftDigitsCNN(bits=3), (1, 8, 8))
    pt2 = tmp_path / "shift.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)), pt2)
    art = edgert.compile(pt2)  # through the saved .pt2, as a user would
    float_bytes = sum(p.numel() * 4 for p in DigitsCNN().parameters()) + sum(
        b.numel() * 4 for n, b in DigitsCNN().named_buffers() if "running" in n)
    shift_bytes = sum(a.nbytes for a in art.params.values())
    assert shift_bytes <= float_bytes / 6, (shift_bytes, float_bytes)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    got = edgert.load(art.save(tmp_path / "s.edgert")).run(x.numpy())
    # shift layers are integer-exact; the float BatchNorms between them agree with torch to ~1e-6,
    # which could move a value across a rounding boundary of the next layer's fixed-point input
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()
    costs = node_costs(art)
    first_conv = next(c for c in costs if c.op == "shift_conv2d")
    assert first_conv.ops["shift_add"] == 16 * 64 * 9  # 16 channels x 8x8 outputs x 3x3x1 weights
    assert next(c for c in costs if c.op == "shift_linear").ops["shift_add"] == 64 * 10


def test_select_shift_path_sets_every_shift_node():
    torch.manual_seed(0)
    model = calibrated(torch.nn.Sequential(ShiftConv2d(1, 2, 3), torch.nn.Flatten(), ShiftLinear(2, 3)),
                        (1, 3, 3))
    g = edgert.compilers.compile.import_model(model, np.zeros((1, 1, 3, 3), np.float32))
    before = [n.path for n in g.nodes if n.op.startswith("shift")]
    after = select_shift_path(g, "shift_add")
    assert before == ["int_mac", "int_mac"]
    assert [n.path for n in after.nodes if n.op.startswith("shift")] == ["shift_add", "shift_add"]
    assert select_shift_path(after, "shift_add") is after
