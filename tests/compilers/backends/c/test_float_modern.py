"""The C kernels of the modern edge ops against the NumPy reference on the host (ASan/UBSan), all
cases in one build: broadcasting mul/sub/div, the activations (also in place after a conv), layouts, reductions,
layer norm, transposed convs and upsampling."""

import numpy as np
import pytest

from edgert import ir
from tests.compilers.backends.c.harness import needs_cc
from tests.compilers.backends.c.test_float import Cases


def elementwise_cases(t: Cases) -> None:
    for cls in (ir.Mul, ir.Sub, ir.Div):
        a, b = t.input((4, 5, 6)), t.input((4, 5, 6))
        t.node(cls, [a, b])                                       # same shapes
        t.node(cls, [a, t.param((4, 1, 1))])                      # a per-channel parameter
        t.node(cls, [t.param((1,)), a])                           # a number first (1 - x)
        t.node(cls, [t.input((4, 1, 1)), t.input((1, 5, 1))])     # both broadcast
        t.node(cls, [t.input((3, 7)), t.param((7,))])             # [N, L, C] style, last axis
    x = t.input((5, 6, 7), scale=3.0)
    t.node(ir.Silu, [x])
    t.node(ir.Hardswish, [x])
    t.node(ir.Hardsigmoid, [x])
    t.node(ir.Hardsigmoid, [x], alpha=0.2, beta=0.5)
    t.node(ir.Gelu, [x])
    t.node(ir.Gelu, [x], approximate="tanh")
    t.node(ir.LeakyRelu, [x], slope=0.2)
    t.node(ir.Prelu, [x, t.param((5,))])
    t.node(ir.Prelu, [x, t.param((1,))])
    t.node(ir.Prelu, [t.input((6, 4)), t.param((6,))])
    y = t.conv(t.input((3, 6, 6)), 3, 4, 3, padding=1, output=False)  # an activation after a conv, in place
    t.node(ir.Mul, [t.node(ir.Hardswish, [y], output=False), t.param((4, 1, 1))])


@needs_cc
def test_elementwise_ops(tmp_path):
    t = Cases(7)
    elementwise_cases(t)
    t.check(tmp_path)


def layout_cases(t: Cases) -> None:
    x = t.input((4, 5, 6))
    t.node(ir.Transpose, [x], perm=(0, 2, 3, 1))
    t.node(ir.Transpose, [x], perm=(0, 3, 1, 2))
    t.node(ir.Transpose, [t.input((7, 1, 3))], perm=(0, 3, 2, 1))           # a unit dim in between
    t.node(ir.Pad, [x], before=(0, 0, 1, 2), after=(0, 0, 0, 1))
    t.node(ir.Pad, [x], before=(0, 1, 0, 0), after=(0, 2, 1, 0), value=-0.5)
    t.node(ir.Pad, [t.input((3, 4, 1))], before=(0, 0, 0, 1), after=(0, 0, 1, 1))  # last dim of 1
    t.node(ir.Pad, [t.input((5, 3))], before=(0, 2, 1), after=(0, 0, 2), value=1.0)
    for axes in ((1,), (3,), (2, 3), (1, 3), (1, 2, 3)):
        t.node(ir.Mean, [x], axes=axes)
        t.node(ir.Sum, [x], axes=axes, keepdim=True)
    seq = t.input((6, 16))
    t.node(ir.LayerNorm, [seq])
    t.node(ir.LayerNorm, [seq, t.param((16,))], eps=1e-3)
    t.node(ir.LayerNorm, [seq, t.param((16,)), t.param((16,))])
    t.node(ir.LayerNorm, [x, t.param((5, 6)), t.param((5, 6))], axes=2)


@needs_cc
def test_layout_reduction_and_layer_norm_ops(tmp_path):
    t = Cases(8)
    layout_cases(t)
    t.check(tmp_path)


def upsampling_cases(t: Cases) -> None:
    def tconv(shape, o, k, bias=True, **attrs):
        kh, kw = (k, k) if isinstance(k, int) else k
        w = t.param((shape[0], o, kh, kw), 1 / np.sqrt(shape[0] * kh * kw))
        t.node(ir.ConvTranspose2d, [t.input(shape), w] + ([t.param((o,))] if bias else []), **attrs)

    tconv((3, 5, 4), 4, 2, stride=2)                                            # the U-Net 2x2 up
    tconv((3, 5, 4), 5, 3, bias=False, stride=2, padding=1, output_padding=1)   # odd kernel, cropped
    tconv((3, 5, 4), 2, (3, 2), stride=(1, 3), padding=(1, 0))                  # rectangular, stride 1 rows
    tconv((5, 3, 7), 3, 4, stride=3, padding=(2, 1), output_padding=(2, 0))     # kernel past the stride
    tconv((1, 4, 4), 6, 1)                                                      # 1x1, one input channel
    x = t.input((3, 5, 4))
    for size in ((10, 8), (15, 12), (10, 7), (3, 2), (5, 4)):                   # up, odd, down, identity
        t.node(ir.Upsample, [x], size=size)
        t.node(ir.Upsample, [x], size=size, mode="bilinear")
        t.node(ir.Upsample, [x], size=size, mode="bilinear", align_corners=True)
    t.node(ir.Upsample, [t.input((2, 1, 1))], size=(3, 4), mode="bilinear", align_corners=True)  # one pixel


@needs_cc
def test_conv_transpose_and_upsample_ops(tmp_path):
    t = Cases(9)
    upsampling_cases(t)
    t.check(tmp_path)


@needs_cc
def test_matmul_of_two_activations(tmp_path):
    t = Cases(10)
    t.node(ir.MatMul, [t.input((5, 7)), t.input((7, 3))])                 # [N, L, C] @ [N, C, L']
    t.node(ir.MatMul, [t.input((2, 4, 6)), t.input((2, 6, 5))])           # heads as a leading dim
    t.node(ir.MatMul, [t.input((1, 9)), t.input((9, 1))])                 # a dot product
    t.check(tmp_path)


@needs_cc
@pytest.mark.parametrize("name", ["tiny_unet", "transformer_block"])
def test_zoo_model_on_the_host_build_matches_torch(name, tmp_path):
    """The compile pipeline's graph (as for stm32h7) through the C build, against torch at batch 3."""
    import torch

    from edgert.compilers.compile import import_model, optimize
    from tests.compilers.backends.c.harness import run_c
    from tests.zoo import ZOO

    model, example = ZOO[name]()
    graph = optimize(import_model(model, example.numpy()))
    x = torch.randn((3,) + tuple(example.shape[1:]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    got = run_c(graph, {"input": x.numpy()}, tmp_path)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
