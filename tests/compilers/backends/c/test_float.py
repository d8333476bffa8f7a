"""The float C kernels against the NumPy reference: every op on random shapes (odd channels, stride,
dilation, asymmetric padding, groups, ceil_mode, broadcasting), several independent cases per build,
then whole models (the digits CNN, a DS-CNN like MLPerf Tiny's keyword spotter)."""

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c import ops_float
from edgert.compilers.backends.c.emit import emit_c
from tests.compilers.backends.c.harness import needs_cc, reference, run_c

pytestmark = needs_cc
N = 3  # samples per case


def _close(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


class Cases:
    """Independent cases in one graph (one build): each adds inputs, params, nodes and outputs."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inputs, self.nodes, self.outputs, self.params, self.feeds = [], [], [], {}, {}

    def input(self, shape, scale=1.0) -> str:
        name = f"x{len(self.inputs)}"
        self.inputs.append((name, ir.TensorSpec((None,) + tuple(shape))))
        self.feeds[name] = (scale * self.rng.standard_normal((N,) + tuple(shape))).astype(np.float32)
        return name

    def param(self, shape, scale=1.0) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = (scale * self.rng.standard_normal(shape)).astype(np.float32)
        return name

    def node(self, cls, inputs, output=True, **attrs) -> str:
        name = f"v{len(self.nodes)}"
        self.nodes.append(cls(name=name, inputs=tuple(inputs), output=name, **attrs))
        if output:
            self.outputs.append(name)
        return name

    def conv(self, x, c, o, k, groups=1, bias=True, output=True, **attrs) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.param((o, c // groups, kh, kw), 1 / np.sqrt(c // groups * kh * kw))
        ins = [x, w] + ([self.param((o,))] if bias else [])
        return self.node(ir.Conv2d, ins, output, groups=groups, **attrs)

    def graph(self) -> ir.Graph:
        return ir.Graph(tuple(self.inputs), tuple(self.nodes), tuple(self.outputs), self.params).validate()

    def check(self, tmp_path, **tol):
        g = self.graph()
        _close(run_c(g, self.feeds, tmp_path), reference(g, self.feeds), **tol)
        return g


def test_conv2d_shapes(tmp_path):
    t = Cases(0)
    t.conv(t.input((3, 9, 11)), 3, 5, 3, padding=1)                                   # odd channels
    t.conv(t.input((4, 10, 9)), 4, 6, (3, 2), groups=2, bias=False, stride=2, dilation=2,
           padding=(1, 0, 2, 1))                                                     # groups 2, asymmetric
    t.conv(t.input((6, 8, 7)), 6, 9, 3, groups=3, stride=(1, 2), padding=(0, 2, 1, 0))  # 3 outputs a group
    t.conv(t.input((13, 7, 5)), 13, 9, 1)                                             # 1x1 direct, 35 pixels
    t.conv(t.input((12, 6, 6)), 12, 8, 1, bias=False)                                 # 1x1 direct, 36 pixels
    t.conv(t.input((5, 9, 8)), 5, 7, 1, stride=2, padding=(1, 0, 0, 1))               # 1x1 gathered
    t.conv(t.input((2, 6, 4)), 2, 3, 5, padding=2, dilation=(2, 1))                   # window past the input
    t.conv(t.input((1, 12, 10)), 1, 16, (4, 3), stride=2, padding=(2, 1, 1, 0))        # one input channel
    t.check(tmp_path)


def test_depthwise_shapes(tmp_path):
    t = Cases(1)
    for h, w in ((25, 5), (9, 6), (2, 2), (3, 7), (4, 3)):                            # the pad-1 kernel
        c = 7 if w % 2 else 4
        t.conv(t.input((c, h, w)), c, c, 3, groups=c, padding=1)
    t.conv(t.input((5, 9, 8)), 5, 10, 3, groups=5, stride=2, padding=(1, 1, 0, 0))    # multiplier 2
    t.conv(t.input((6, 11, 9)), 6, 6, 3, groups=6, dilation=2, padding=2, bias=False)  # dilation 2
    t.conv(t.input((3, 8, 9)), 3, 3, (5, 2), groups=3, stride=(2, 1), padding=(2, 0, 1, 1))  # generic
    t.conv(t.input((4, 7, 7)), 4, 4, 3, groups=4)                                      # no padding: in place
    t.conv(t.input((3, 1, 9)), 3, 3, 3, groups=3, padding=1)                          # one row: generic
    t.conv(t.input((4, 6, 6)), 4, 8, 1, groups=4)                                      # 1x1, multiplier 2
    t.check(tmp_path)


def test_zero_edge_taps_are_dropped(tmp_path):
    # a TF 'same' conv rebuilt as in tools/models/mlperf_tiny.py: a leading zero row, symmetric padding
    t = Cases(2)
    v = t.conv(t.input((1, 49, 10)), 1, 8, (11, 4), stride=2, padding=(5, 1))
    t.params[t.nodes[-1].inputs[1]][:, :, 0, :] = 0
    x = t.input((6, 12, 12))
    t.conv(x, 6, 6, 4, groups=6, stride=2, padding=1)
    t.params[t.nodes[-1].inputs[1]][:, :, :, 0] = 0
    t.params[t.nodes[-1].inputs[1]][:, :, 0, :] = 0
    t.check(tmp_path)
    m = emit_c(t.graph())
    assert ".kh = 10, .kw = 4" in m.files["model.c"] and ".pt = 4, .pl = 1" in m.files["model.c"], v
    assert ".kh = 3, .kw = 3" in m.files["model.c"]


def test_relu_and_clip_fold_into_conv_and_linear(tmp_path):
    t = Cases(3)
    a = t.conv(t.input((5, 7, 6)), 5, 6, 3, padding=1, output=False)
    t.node(ir.Relu, [a])
    b = t.conv(t.input((4, 6, 6)), 4, 4, 3, groups=4, padding=1, output=False)
    t.node(ir.Clip, [b], lo=-0.25, hi=0.5)
    c = t.conv(t.input((3, 5, 5)), 3, 4, 1, output=False)
    t.node(ir.Relu, [t.node(ir.Relu, [c], output=False)])        # relu of a folded relu
    d = t.conv(t.input((3, 5, 5)), 3, 4, 3, output=True)          # a graph output: not folded
    t.node(ir.Relu, [d])
    e = t.node(ir.Linear, [t.input((19,)), t.param((10, 19)), t.param((10,))], output=False)
    t.node(ir.Relu, [e])
    g = t.check(tmp_path)
    code = emit_c(g).files["model.c"]
    assert code.count("EK_ACT_MAX") == 3 and code.count("EK_ACT_CLAMP") == 1
    assert code.count("ek_copy") == 4 and code.count("ek_relu(") == 2


def test_linear_and_batch_norm(tmp_path):
    t = Cases(4)
    t.node(ir.Linear, [t.input((37,)), t.param((11, 37), 0.2), t.param((11,))])
    t.node(ir.Linear, [t.input((3, 20)), t.param((8, 20), 0.2)])                    # rows = 3
    t.node(ir.Linear, [t.input((64,)), t.param((16, 64), 0.2), t.param((16,))])
    for shape in ((5, 4, 3), (6,)):
        c = shape[0]
        var = t.param((c,))
        t.params[var] = np.abs(t.params[var]) + 0.1
        t.node(ir.BatchNorm, [t.input(shape), t.param((c,)), t.param((c,)), t.param((c,)), var], eps=1e-3)
    t.check(tmp_path)


def test_elementwise_in_place(tmp_path):
    t = Cases(5)
    x = t.input((4, 5, 3), scale=4.0)
    v = t.node(ir.Sigmoid, [x], output=False)   # reads the graph input: a new buffer
    v = t.node(ir.Tanh, [t.node(ir.Add, [v, x], output=False)], output=False)  # in place from here on
    v = t.node(ir.Clip, [v], output=False, lo=-0.5, hi=0.75)
    t.node(ir.Relu, [v])
    big = t.input((7,), scale=60.0)             # exp overflows both ways
    t.node(ir.Sigmoid, [big])
    t.node(ir.Tanh, [big])
    g = t.check(tmp_path)
    # the chain after the first node works in one buffer
    assert emit_c(g).arena_bytes <= 2 * 4 * 60 + 32


def test_pools(tmp_path):
    t = Cases(6)
    x = t.input((3, 9, 8))
    t.node(ir.MaxPool2d, [x], kernel=3, stride=2, padding=1, ceil_mode=True)
    t.node(ir.MaxPool2d, [x], kernel=(2, 3), stride=(1, 2), padding=(1, 0, 0, 1), dilation=2)
    t.node(ir.MaxPool2d, [x], kernel=2, stride=2)
    t.node(ir.AvgPool2d, [x], kernel=3, stride=2, padding=1, ceil_mode=True)
    t.node(ir.AvgPool2d, [x], kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    t.node(ir.AvgPool2d, [x], kernel=(2, 4), stride=(3, 1), padding=(1, 2, 0, 1))
    t.node(ir.AvgPool2d, [t.input((5, 25, 5))], kernel=(24, 5), stride=(24, 5))
    t.node(ir.AdaptiveAvgPool2d, [x], output_size=(4, 3))
    t.node(ir.AdaptiveAvgPool2d, [x], output_size=1)
    t.check(tmp_path)


def test_add_broadcasting(tmp_path):
    t = Cases(7)
    a = t.input((5, 4, 3))
    t.node(ir.Add, [a, t.input((5, 4, 3))])                          # same shape
    t.node(ir.Add, [a, t.param((5, 1, 1))])                          # per-channel, bias-like
    t.node(ir.Add, [t.param((4, 1)), a])                             # the broadcast one first
    t.node(ir.Add, [t.input((1, 4, 1)), t.input((3, 1, 5))])         # both broadcast
    t.node(ir.Add, [t.input((2, 1, 3, 1, 4)), t.input((1, 5, 3, 2, 1))])   # rank 6, alternating
    t.node(ir.Add, [a, t.param((1,))])                                # a scalar
    t.check(tmp_path)


def test_broadcast_strides_merge_dims():
    assert ops_float.broadcast_strides((1, 5, 4, 3), (1, 5, 4, 3), (5, 1, 1)) == ([5, 12], [[12, 1], [1, 0]])
    assert ops_float.broadcast_strides((1, 3, 4), (1, 3, 4), (1, 3, 4)) == ([12], [[1], [1]])
    assert ops_float.broadcast_strides((1, 1), (1, 1), (1,)) == ([1], [[0], [0]])


def test_concat_and_softmax(tmp_path):
    t = Cases(8)
    t.node(ir.Concat, [t.input((2, 3, 4)), t.input((5, 3, 4)), t.input((1, 3, 4))], axis=1)
    t.node(ir.Concat, [t.input((2, 3, 4)), t.input((2, 3, 2)), t.input((2, 3, 1))], axis=3)
    s = t.input((6, 4, 5), scale=5.0)
    t.node(ir.Softmax, [s], axis=1)
    t.node(ir.Softmax, [s], axis=3)
    t.node(ir.Softmax, [t.input((12,), scale=30.0)], axis=1)
    t.check(tmp_path)


def test_digits_cnn_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    from edgert.compilers.compile import import_model, optimize
    from tools.models.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x = np.random.default_rng(9).random((4, 1, 8, 8), dtype=np.float32)
    g = optimize(import_model(model, x))
    got, want = run_c(g, {g.inputs[0][0]: x}, tmp_path)[0], reference(g, {g.inputs[0][0]: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


def dscnn_graph(seed: int = 0, filters: int = 64, blocks: int = 4) -> ir.Graph:
    """A DS-CNN as MLPerf Tiny's keyword spotter, BatchNorm already folded: 1x49x10 -> conv 10x4 stride 2
    (padding 4, 1, 5, 1) + relu, 4 x (depthwise 3x3 + relu, pointwise + relu), 24x5 average pool,
    linear 12, softmax."""
    t = Cases(seed)
    v = t.conv(t.input((1, 49, 10)), 1, filters, (10, 4), stride=2, padding=(4, 1, 5, 1), output=False)
    v = t.node(ir.Relu, [v], output=False)
    for _ in range(blocks):
        v = t.node(ir.Relu, [t.conv(v, filters, filters, 3, groups=filters, padding=1, output=False)],
                   output=False)
        v = t.node(ir.Relu, [t.conv(v, filters, filters, 1, output=False)], output=False)
    v = t.node(ir.AvgPool2d, [v], output=False, kernel=(24, 5), stride=(24, 5))
    v = t.node(ir.Flatten, [v], output=False)
    v = t.node(ir.Linear, [v, t.param((12, filters), 0.3), t.param((12,))], output=False)
    t.node(ir.Softmax, [v], axis=1)
    return t.graph(), t.feeds


def test_dscnn_end_to_end(tmp_path):
    g, feeds = dscnn_graph()
    _close(run_c(g, feeds, tmp_path), reference(g, feeds), rtol=1e-4, atol=1e-6)
