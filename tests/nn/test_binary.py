"""edgert.nn binary layers: forward definition, STE gradients, padding choice, MST regularizer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgert.nn import BinaryActivation, BinaryConv2d, BinaryLinear
from edgert.nn.mst import MSTRegularizer, word_blocks


def _sign(t):
    return torch.where(t >= 0, 1.0, -1.0)


@pytest.mark.parametrize("pad_mode,value", [("one", 1.0), ("zero", 0.0)])
def test_conv_forward_is_the_definition(pad_mode, value):
    torch.manual_seed(0)
    m = BinaryConv2d(5, 4, 3, stride=2, padding=1, pad_mode=pad_mode, scale=True, bias=True)
    with torch.no_grad():
        m.scale.uniform_(0.5, 2.0)
        m.bias.normal_()
    x = torch.randn(2, 5, 7, 7)
    want = F.conv2d(F.pad(_sign(x), (1, 1, 1, 1), value=value), _sign(m.weight), stride=2)
    want = want * m.scale.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(x), want, rtol=0, atol=0)


def test_ste_gradients_pass_where_inside_one():
    torch.manual_seed(0)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    BinaryActivation()(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    lin = BinaryLinear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -3.0, 0.2], [1.0, -0.1, 2.0]]))
    z = torch.tensor([[0.3, -0.4, 5.0]], requires_grad=True)
    lin(z).sum().backward()
    assert (lin.weight.grad[0, 1] == 0) and (lin.weight.grad[1, 2] == 0)  # |w| > 1: clipped
    assert z.grad[0, 2] == 0 and z.grad[0, 0] != 0


def test_invalid_pad_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'one'.*'zero'"):
        BinaryConv2d(2, 2, pad_mode="reflect")


def test_word_blocks_follow_the_kernel_layout():
    w = torch.arange(2 * 70 * 1 * 2, dtype=torch.float32).reshape(2, 70, 1, 2)
    b = word_blocks(w)
    assert b.shape == (2, 4, 64)  # 2 taps x 2 words
    assert b[0, 0, 1] == w[0, 1, 0, 0] and b[0, 1, 5] == w[0, 69, 0, 0] and b[0, 1, 6] == 0


def test_regularizer_shrinks_word_distances():
    from edgert.ops.binary.bits import pack_conv_weight
    from edgert.ops.binary.mst import plan

    torch.manual_seed(0)
    m = BinaryConv2d(64, 16, 3)
    reg = MSTRegularizer([m], every=10)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    before = plan(pack_conv_weight(m.weight.detach().numpy()), 9 * 64).word_reduction
    for _ in range(160):
        opt.zero_grad()
        reg().backward()
        opt.step()
    after = plan(pack_conv_weight(m.weight.detach().numpy()), 9 * 64).word_reduction
    assert before == 1.0 and after > 2.0
