"""The NumPy reference interpreter against torch.nn.functional, op by op."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgert import ir
from edgert.ops.reference import run_graph_ref


def _run(node: ir.Node, x: np.ndarray, params: dict | None = None) -> np.ndarray:
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None,) + x.shape[1:])),), nodes=(node,),
                 outputs=(node.output,), params=params or {})
    return run_graph_ref(g, {"x": x})[0]


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 6, 11, 9)).astype(np.float32)
T = torch.from_numpy(X)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), ((2, 1), (1, 2), (2, 1), 2), (1, 1, 1, 6), (3, 2, 2, 3)])
def test_conv2d(stride, padding, dilation, groups):
    w = RNG.standard_normal((12, 6 // groups, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(12).astype(np.float32)
    node = ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", stride=stride, padding=padding,
                     dilation=dilation, groups=groups)
    want = F.conv2d(T, torch.from_numpy(w), torch.from_numpy(b), stride, padding, dilation, groups)
    np.testing.assert_allclose(_run(node, X, {"w": w, "b": b}), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, True), (3, 2, 1, 2, True),
                                          ((2, 3), (1, 2), (1, 1), 1, True)])
def test_max_pool(k, s, p, d, ceil):
    node = ir.MaxPool2d(name="m", inputs=("x",), output="y", kernel=k, stride=s, padding=p, dilation=d,
                        ceil_mode=ceil)
    want = F.max_pool2d(T, k, s, p, d, ceil_mode=ceil)
    np.testing.assert_array_equal(_run(node, X), want.numpy())


@pytest.mark.parametrize("k,s,p,ceil,cip", [(2, 2, 0, False, True), (3, 2, 1, True, True),
                                            (3, 2, 1, True, False), ((3, 2), (2, 3), (1, 1), True, False)])
def test_avg_pool(k, s, p, ceil, cip):
    node = ir.AvgPool2d(name="a", inputs=("x",), output="y", kernel=k, stride=s, padding=p, ceil_mode=ceil,
                        count_include_pad=cip)
    want = F.avg_pool2d(T, k, s, p, ceil_mode=ceil, count_include_pad=cip)
    np.testing.assert_allclose(_run(node, X), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (4, 3), (11, 9)])
def test_adaptive_avg_pool(size):
    node = ir.AdaptiveAvgPool2d(name="a", inputs=("x",), output="y", output_size=size)
    np.testing.assert_allclose(_run(node, X), F.adaptive_avg_pool2d(T, size).numpy(), rtol=1e-5, atol=1e-6)


def test_elementwise_and_softmax():
    cases = [(ir.Relu(name="r", inputs=("x",), output="y"), F.relu(T)),
             (ir.Clip(name="c", inputs=("x",), output="y", lo=0.0, hi=6.0), F.relu6(T)),
             (ir.Sigmoid(name="s", inputs=("x",), output="y"), torch.sigmoid(T)),
             (ir.Tanh(name="t", inputs=("x",), output="y"), torch.tanh(T)),
             (ir.Softmax(name="s", inputs=("x",), output="y", axis=1), F.softmax(T, 1))]
    for node, want in cases:
        np.testing.assert_allclose(_run(node, X), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=node.op)


def test_batch_norm_and_linear():
    p = {k: RNG.standard_normal(6).astype(np.float32) for k in ("g", "b", "m")}
    p["v"] = RNG.uniform(0.5, 2, 6).astype(np.float32)
    node = ir.BatchNorm(name="bn", inputs=("x", "g", "b", "m", "v"), output="y", eps=1e-3)
    want = F.batch_norm(T, *(torch.from_numpy(p[k]) for k in ("m", "v", "g", "b")), eps=1e-3)
    np.testing.assert_allclose(_run(node, X, p), want.numpy(), rtol=1e-5, atol=1e-5)
    w = RNG.standard_normal((5, 9)).astype(np.float32)
    node = ir.Linear(name="l", inputs=("x", "w"), output="y")
    np.testing.assert_allclose(_run(node, X, {"w": w}), F.linear(T, torch.from_numpy(w)).numpy(),
                               rtol=1e-5, atol=1e-5)
