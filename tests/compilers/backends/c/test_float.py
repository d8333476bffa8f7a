"""The float C kernels against the NumPy reference: every op on random shapes (odd channels, stride,
dilation, asymmetric padding, groups, ceil_mode, broadcasting), many independent cases per build (a
host build with the sanitizers takes seconds), then whole models: the digits CNN through the torch
frontend, and a DS-CNN like MLPerf Tiny's keyword spotter."""

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c import ops_float
from edgert.compilers.backends.c.emit import emit_c
from tests.compilers.backends.c.harness import needs_cc, reference, run_c

N = 3  # samples per case


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

    def check(self, tmp_path, rtol=1e-5, atol=1e-6) -> ir.Graph:
        g = self.graph()
        producer = {n.output: n for n in g.nodes}
        for name, got, want in zip(g.outputs, run_c(g, self.feeds, tmp_path), reference(g, self.feeds)):
            n = producer[name]
            assert got.shape == want.shape, (n, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{n.op} {n.name}: {n}")
        return g


def conv_cases(t: Cases) -> None:
    t.conv(t.input((3, 9, 11)), 3, 5, 3, padding=1)                                   # odd channels
    t.conv(t.input((4, 10, 9)), 4, 6, (3, 2), groups=2, bias=False, stride=2, dilation=2,
           padding=(1, 0, 2, 1))                                                     # groups 2, asymmetric
    t.conv(t.input((6, 8, 7)), 6, 9, 3, groups=3, stride=(1, 2), padding=(0, 2, 1, 0))  # 3 outputs a group
    t.conv(t.input((13, 7, 5)), 13, 9, 1)                                             # 1x1 direct, 35 pixels
    t.conv(t.input((12, 6, 6)), 12, 8, 1, bias=False)                                 # 1x1 direct, 36 pixels
    t.conv(t.input((5, 9, 8)), 5, 7, 1, stride=2, padding=(1, 0, 0, 1))               # 1x1 gathered
    t.conv(t.input((2, 6, 4)), 2, 3, 5, padding=2, dilation=(2, 1))                   # windows past the input
    t.conv(t.input((1, 12, 10)), 1, 16, (4, 3), stride=2, padding=(2, 1, 1, 0))        # one input channel


def depthwise_cases(t: Cases) -> None:
    for h, w in ((25, 5), (9, 6), (2, 2), (3, 7), (4, 3), (5, 4), (7, 8), (6, 9)):  # the pad-1 strips
        c = 3 if w % 2 else 4
        t.conv(t.input((c, h, w)), c, c, 3, groups=c, padding=1)
    t.conv(t.input((5, 9, 8)), 5, 10, 3, groups=5, stride=2, padding=(1, 1, 0, 0))    # multiplier 2
    t.conv(t.input((6, 11, 9)), 6, 6, 3, groups=6, dilation=2, padding=2, bias=False)  # dilation 2
    t.conv(t.input((3, 8, 9)), 3, 3, (5, 2), groups=3, stride=(2, 1), padding=(2, 0, 1, 1))  # generic
    t.conv(t.input((4, 7, 7)), 4, 4, 3, groups=4)                                      # no padding: no copy
    t.conv(t.input((3, 1, 9)), 3, 3, 3, groups=3, padding=1)                          # one row: generic
    t.conv(t.input((4, 6, 6)), 4, 8, 1, groups=4)                                      # 1x1, multiplier 2
    t.conv(t.input((2, 20, 3)), 2, 2, (17, 2), groups=2, padding=(3, 1, 2, 0))       # taller than 16 rows


def trim_cases(t: Cases) -> None:
    # a TF 'same' conv rebuilt as in tools/models/mlperf_tiny.py: a leading zero row, symmetric padding
    t.conv(t.input((1, 49, 10)), 1, 8, (11, 4), stride=2, padding=(5, 1))
    t.params[t.nodes[-1].inputs[1]][:, :, 0, :] = 0
    t.conv(t.input((6, 12, 12)), 6, 6, 4, groups=6, stride=2, padding=1)               # depthwise 4x4 -> 3x3
    t.params[t.nodes[-1].inputs[1]][:, :, :, 0] = 0
    t.params[t.nodes[-1].inputs[1]][:, :, 0, :] = 0


def fusion_cases(t: Cases) -> None:
    t.node(ir.Relu, [t.conv(t.input((5, 7, 6)), 5, 6, 3, padding=1, output=False)])
    t.node(ir.Clip, [t.conv(t.input((4, 6, 6)), 4, 4, 3, groups=4, padding=1, output=False)],
           lo=-0.25, hi=0.5)
    t.node(ir.Relu, [t.conv(t.input((4, 6, 5)), 4, 4, 3, groups=4, padding=1, output=False)])
    c = t.conv(t.input((3, 5, 5)), 3, 4, 1, output=False)
    t.node(ir.Relu, [t.node(ir.Relu, [c], output=False)])        # relu of a folded relu
    t.node(ir.Relu, [t.conv(t.input((3, 5, 5)), 3, 4, 3)])        # the conv is a graph output: not folded
    t.node(ir.Relu, [t.node(ir.Linear, [t.input((19,)), t.param((10, 19)), t.param((10,))], output=False)])


@needs_cc
def test_conv2d_depthwise_and_folded_activations(tmp_path):
    t = Cases(0)
    conv_cases(t)
    depthwise_cases(t)
    trim_cases(t)
    fusion_cases(t)
    t.check(tmp_path)


def test_zero_edge_taps_are_dropped():
    t = Cases(2)
    trim_cases(t)
    code = emit_c(t.graph()).files["model.c"]
    assert ".kh = 10, .kw = 4" in code and ".pt = 4, .pl = 1" in code  # 11x4 padded 5 -> 10x4 padded 4
    assert ".kh = 3, .kw = 3" in code and ".pt = 0, .pl = 0" in code


def test_relu_and_clip_fold_into_their_producer():
    t = Cases(3)
    fusion_cases(t)
    code = emit_c(t.graph()).files["model.c"]
    assert code.count("EK_ACT_MAX") == 4 and code.count("EK_ACT_CLAMP") == 1
    assert code.count("ek_copy") == 5 and code.count("ek_relu(") == 2


def other_cases(t: Cases) -> None:
    # linear (rows = numel / K) and batch norm
    t.node(ir.Linear, [t.input((37,)), t.param((11, 37), 0.2), t.param((11,))])
    t.node(ir.Linear, [t.input((3, 20)), t.param((8, 20), 0.2)])
    t.node(ir.Linear, [t.input((64,)), t.param((16, 64), 0.2), t.param((16,))])
    for shape in ((5, 4, 3), (6,)):
        var = t.param((shape[0],))
        t.params[var] = np.abs(t.params[var]) + 0.1
        c = shape[:1]
        t.node(ir.BatchNorm, [t.input(shape), t.param(c), t.param(c), t.param(c), var], eps=1e-3)
    # elementwise, written in place after the first node
    x = t.input((4, 5, 3), scale=4.0)
    v = t.node(ir.Sigmoid, [x], output=False)
    v = t.node(ir.Tanh, [t.node(ir.Add, [v, x], output=False)], output=False)
    t.node(ir.Relu, [t.node(ir.Clip, [v], output=False, lo=-0.5, hi=0.75)])
    big = t.input((7,), scale=60.0)  # exp overflows both ways
    t.node(ir.Sigmoid, [big])
    t.node(ir.Tanh, [big])
    # pools
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
    # add with broadcasting
    a = t.input((5, 4, 3))
    t.node(ir.Add, [a, t.input((5, 4, 3))])                          # same shape
    t.node(ir.Add, [a, t.param((5, 1, 1))])                          # per channel, bias-like
    t.node(ir.Add, [t.param((4, 1)), a])                             # the broadcast one first
    t.node(ir.Add, [t.input((1, 4, 1)), t.input((3, 1, 5))])         # both broadcast
    t.node(ir.Add, [t.input((2, 1, 3, 1, 4)), t.input((1, 5, 3, 2, 1))])   # rank 6, alternating
    t.node(ir.Add, [a, t.param((1,))])                                # a scalar
    # concat, softmax
    t.node(ir.Concat, [t.input((2, 3, 4)), t.input((5, 3, 4)), t.input((1, 3, 4))], axis=1)
    t.node(ir.Concat, [t.input((2, 3, 4)), t.input((2, 3, 2)), t.input((2, 3, 1))], axis=3)
    s = t.input((6, 4, 5), scale=5.0)
    t.node(ir.Softmax, [s], axis=1)
    t.node(ir.Softmax, [s], axis=3)
    t.node(ir.Softmax, [t.input((12,), scale=30.0)], axis=1)


@needs_cc
def test_linear_batch_norm_elementwise_pools_add_concat_softmax(tmp_path):
    t = Cases(4)
    other_cases(t)
    t.check(tmp_path)


def test_elementwise_chain_works_in_one_buffer():
    t = Cases(5)
    x = t.input((4, 5, 3))
    v = t.node(ir.Sigmoid, [x], output=False)   # reads the graph input: a new buffer
    v = t.node(ir.Tanh, [t.node(ir.Add, [v, x], output=False)], output=False)
    t.node(ir.Relu, [t.node(ir.Clip, [v], output=False, lo=-0.5, hi=0.75)])
    assert emit_c(t.graph()).arena_bytes == 4 * 60  # the relu writes the graph output in place


def test_broadcast_strides_merge_dims():
    assert ops_float.broadcast_strides((1, 5, 4, 3), (1, 5, 4, 3), (5, 1, 1)) == ([5, 12], [[12, 1], [1, 0]])
    assert ops_float.broadcast_strides((1, 3, 4), (1, 3, 4), (1, 3, 4)) == ([12], [[1], [1]])
    assert ops_float.broadcast_strides((1, 1), (1, 1), (1,)) == ([1], [[0], [0]])


@needs_cc
def test_digits_cnn_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    from edgert.compilers.compile import import_model, optimize
    from tools.models.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    with torch.no_grad():  # BatchNorm statistics worth folding
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x = np.random.default_rng(9).random((4, 1, 8, 8), dtype=np.float32)
    g = optimize(import_model(model, x))
    assert "batch_norm" not in {n.op for n in g.nodes}
    feeds = {g.inputs[0][0]: x}
    got, want = run_c(g, feeds, tmp_path)[0], reference(g, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


def dscnn(seed: int = 0, filters: int = 64, blocks: int = 4) -> Cases:
    """A DS-CNN as MLPerf Tiny's keyword spotter with its BatchNorms folded: 1x49x10 -> conv 10x4 stride 2
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
    return t


@needs_cc
def test_dscnn_end_to_end(tmp_path):
    t = dscnn()
    g = t.check(tmp_path, rtol=1e-4, atol=1e-6)
    code = emit_c(g).files["model.c"]
    assert code.count("ek_relu(") == 0 and code.count("ek_copy") == 9  # every relu folded, in place
