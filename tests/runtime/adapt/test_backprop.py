"""backprop.backward against torch autograd over the same IR graph (a small torch interpreter of it)."""

import numpy as np
import pytest

from edgert import ir
from edgert.errors import EdgertError
from edgert.runtime.adapt.backprop import Backward, backward, needed_values

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_node(node: ir.Node, a: list):
    """One IR node in torch functional ops (the independent reference the gradients are checked with)."""
    x = a[0]
    match node:
        case ir.Conv2d():
            t, l, b, r = node.padding
            return F.conv2d(F.pad(x, (l, r, t, b)), a[1], a[2] if len(a) == 3 else None, node.stride, 0,
                            node.dilation, node.groups)
        case ir.Linear():
            return F.linear(x, a[1], a[2] if len(a) == 3 else None)
        case ir.BatchNorm():
            shape = (1, -1) + (1,) * (x.dim() - 2)
            g, beta, mean, var = (p.reshape(shape) for p in a[1:])
            return (x - mean) / torch.sqrt(var + node.eps) * g + beta
        case ir.Relu():
            return torch.relu(x)
        case ir.Clip():
            return F.hardtanh(x, node.lo, node.hi)
        case ir.Sigmoid():
            return torch.sigmoid(x)
        case ir.Tanh():
            return torch.tanh(x)
        case ir.Softmax():
            return torch.softmax(x, node.axis)
        case ir.MaxPool2d():
            return F.max_pool2d(x, node.kernel, node.stride, node.padding[:2], node.dilation, node.ceil_mode)
        case ir.AvgPool2d():
            return F.avg_pool2d(x, node.kernel, node.stride, node.padding[:2], node.ceil_mode,
                                node.count_include_pad)
        case ir.AdaptiveAvgPool2d():
            return F.adaptive_avg_pool2d(x, node.output_size)
        case ir.Flatten():
            return x.flatten(node.start_dim)
        case ir.Reshape():
            return x.reshape((x.shape[0],) + node.shape)
        case ir.Add():
            return a[0] + a[1]
        case ir.Concat():
            return torch.cat(a, node.axis)
    raise AssertionError(node.op)


def _torch_grads(graph: ir.Graph, feeds: dict, seed: np.ndarray, wrt: list[str]):
    """Forward values (float64 numpy) and d<seed . output>/d(wrt) by torch autograd."""
    env = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in {**graph.params, **feeds}.items()}
    for node in graph.nodes:
        env[node.output] = _torch_node(node, [env[i] for i in node.inputs])
        env[node.output].retain_grad()
    out = env[graph.outputs[0]]
    (out * torch.from_numpy(seed)).sum().backward()
    values = {k: v.detach().numpy() for k, v in env.items() if k not in graph.params}
    return values, {w: env[w].grad.numpy() for w in wrt}


def _one_node_graph(node: ir.Node, x_shape, params: dict) -> ir.Graph:
    return ir.Graph(inputs=(("x", ir.TensorSpec((None,) + x_shape)),), nodes=(node,), outputs=(node.output,),
                    params=params).validate()


def _rng():
    return np.random.default_rng(0)


def _w(*shape):
    return _rng().standard_normal(shape).astype(np.float32)


CASES = {
    "conv": lambda: _one_node_graph(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y"), (3, 7, 6),
                                    {"w": _w(4, 3, 3, 3), "b": _w(4)}),
    "conv strided padded dilated no bias": lambda: _one_node_graph(
        ir.Conv2d(name="c", inputs=("x", "w"), output="y", stride=(2, 1), padding=(1, 2, 0, 1), dilation=(2, 1)),
        (3, 9, 7), {"w": _w(5, 3, 3, 2)}),
    "conv grouped": lambda: _one_node_graph(
        ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", groups=2, padding=1, stride=2), (4, 8, 8),
        {"w": _w(6, 2, 3, 3), "b": _w(6)}),
    "conv depthwise": lambda: _one_node_graph(
        ir.Conv2d(name="c", inputs=("x", "w"), output="y", groups=4, padding=1), (4, 5, 5), {"w": _w(4, 1, 3, 3)}),
    "conv 1x1": lambda: _one_node_graph(ir.Conv2d(name="c", inputs=("x", "w"), output="y"), (6, 4, 4),
                                        {"w": _w(3, 6, 1, 1)}),
    "linear": lambda: _one_node_graph(ir.Linear(name="l", inputs=("x", "w", "b"), output="y"), (7,),
                                      {"w": _w(5, 7), "b": _w(5)}),
    "batch_norm": lambda: _one_node_graph(
        ir.BatchNorm(name="bn", inputs=("x", "g", "b", "m", "v"), output="y", eps=1e-3), (3, 4, 5),
        {"g": _w(3), "b": _w(3), "m": _w(3), "v": np.abs(_w(3)) + 0.5}),
    "relu": lambda: _one_node_graph(ir.Relu(name="r", inputs=("x",), output="y"), (3, 4, 4), {}),
    "clip": lambda: _one_node_graph(ir.Clip(name="r", inputs=("x",), output="y", lo=-0.5, hi=0.7), (3, 4), {}),
    "sigmoid": lambda: _one_node_graph(ir.Sigmoid(name="r", inputs=("x",), output="y"), (3, 4), {}),
    "tanh": lambda: _one_node_graph(ir.Tanh(name="r", inputs=("x",), output="y"), (3, 4), {}),
    "softmax": lambda: _one_node_graph(ir.Softmax(name="r", inputs=("x",), output="y"), (6,), {}),
    "max_pool": lambda: _one_node_graph(ir.MaxPool2d(name="p", inputs=("x",), output="y"), (3, 6, 7), {}),
    "max_pool padded ceil overlapping": lambda: _one_node_graph(
        ir.MaxPool2d(name="p", inputs=("x",), output="y", kernel=3, stride=2, padding=1, ceil_mode=True),
        (2, 8, 7), {}),
    "max_pool dilated": lambda: _one_node_graph(
        ir.MaxPool2d(name="p", inputs=("x",), output="y", kernel=2, stride=1, dilation=2), (2, 6, 6), {}),
    "avg_pool ceil": lambda: _one_node_graph(
        ir.AvgPool2d(name="p", inputs=("x",), output="y", kernel=2, stride=2, ceil_mode=True), (2, 7, 5), {}),
    "avg_pool padded excluding pad": lambda: _one_node_graph(
        ir.AvgPool2d(name="p", inputs=("x",), output="y", kernel=3, stride=1, padding=1, count_include_pad=False),
        (2, 4, 5), {}),
    "adaptive_avg_pool": lambda: _one_node_graph(
        ir.AdaptiveAvgPool2d(name="p", inputs=("x",), output="y", output_size=(2, 3)), (2, 5, 7), {}),
    "flatten": lambda: _one_node_graph(ir.Flatten(name="f", inputs=("x",), output="y"), (2, 3, 4), {}),
    "reshape": lambda: _one_node_graph(ir.Reshape(name="f", inputs=("x",), output="y", shape=(4, -1)), (2, 3, 4), {}),
    "add broadcast": lambda: _one_node_graph(ir.Add(name="a", inputs=("x", "p"), output="y"), (3, 4, 5),
                                             {"p": _w(3, 1, 5)}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_rule_matches_torch_autograd(case, batch):
    graph = CASES[case]()
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + graph.inputs[0][1].shape[1:])
    if "pool" in case and "avg" not in case:  # distinct values: ties make the max's gradient arbitrary
        x = x + np.arange(x.size).reshape(x.shape) * 1e-3
    values, _ = _torch_grads(graph, {"x": x}, np.zeros(1), [])  # forward only, for the output shape
    seed = rng.standard_normal(values["y"].shape)
    wrt = ["x"] + list(graph.params)
    values, want = _torch_grads(graph, {"x": x}, seed, wrt)
    params = {k: v.astype(np.float64) for k, v in graph.params.items()}
    given = {k: values[k] for k in needed_values(graph, ["y"], wrt)}
    got = backward(graph, given, {"y": seed}, wrt, params)
    for w in wrt:
        np.testing.assert_allclose(got[w], want[w], rtol=1e-9, atol=1e-12, err_msg=w)


def _zoo_graph(name: str, fold: bool) -> ir.Graph:
    from edgert.compilers.compile import import_model, optimize
    from tests.zoo import ZOO

    model, example = ZOO[name]()
    return optimize(import_model(model, example), fold_bn=fold)


@pytest.mark.parametrize("name", ["plain", "residual", "depthwise", "strided", "pooled", "multibranch"])
@pytest.mark.parametrize("fold", [False, True])
def test_whole_graph_gradient_matches_torch_autograd(name, fold):
    """Input and every parameter, from the logits back; only the needed values are given (as taps)."""
    graph = _zoo_graph(name, fold)
    (xname, spec), = graph.inputs
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2,) + spec.shape[1:])
    values, _ = _torch_grads(graph, {xname: x}, np.zeros(1), [])
    out = graph.outputs[0]
    seed = rng.standard_normal(values[out].shape)
    wrt = [xname] + list(graph.params)
    values, want = _torch_grads(graph, {xname: x}, seed, wrt)
    need = needed_values(graph, [out], wrt)
    assert all(graph.producers().get(n) is None or graph.producers()[n].op in ("conv2d", "linear") for n in need)
    got = backward(graph, {k: values[k] for k in need}, {out: seed}, wrt,
                   {k: v.astype(np.float64) for k, v in graph.params.items()})
    for w in wrt:
        np.testing.assert_allclose(got[w], want[w], rtol=1e-8, atol=1e-10 * np.abs(want[w]).max(), err_msg=w)


def test_float32_step_within_1e_5_of_float64():
    graph = _zoo_graph("residual", True)
    (xname, spec), = graph.inputs
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4,) + spec.shape[1:])
    out = graph.outputs[0]
    seed = rng.standard_normal((4, 5))
    wrt = list(graph.params)
    values, want = _torch_grads(graph, {xname: x}, seed, wrt)
    need = needed_values(graph, [out], wrt)
    got = backward(graph, {k: values[k].astype(np.float32) for k in need}, {out: seed.astype(np.float32)}, wrt)
    for w in wrt:
        assert got[w].dtype == np.float32
        np.testing.assert_allclose(got[w], want[w], rtol=1e-5, atol=1e-5 * np.abs(want[w]).max(), err_msg=w)


def test_walk_stops_at_the_deepest_wanted_name():
    """Gradients for the last conv's weight need only that conv's input: nothing earlier is read."""
    graph = _zoo_graph("plain", True)
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    out = graph.outputs[0]
    need = needed_values(graph, [out], [convs[-1].inputs[1]])
    # the last conv's input is relu(previous conv output): recomputed from that conv's output
    assert need == [convs[-2].output, convs[-1].output]


def test_given_values_and_gradients_added_into_the_seeds():
    """A cheap value named ``given`` is tapped rather than recomputed; ``into_seeds`` adds the gradient
    arriving at a seeded tensor into the seed array and gives the same gradients."""
    graph = _zoo_graph("plain", True)
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    out, last = graph.outputs[0], convs[-1]
    want = [last.inputs[1]]
    assert needed_values(graph, [out], want, given=[last.inputs[0]]) == [last.inputs[0], last.output]
    (xname, spec), = graph.inputs
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2,) + spec.shape[1:])
    values, _ = _torch_grads(graph, {xname: x}, np.zeros(1), [])
    seeds = {out: rng.standard_normal(values[out].shape), last.output: rng.standard_normal(values[last.output].shape)}
    ref = backward(graph, values, seeds, want)
    given = {k: v.copy() for k, v in seeds.items()}
    got = Backward(graph, list(seeds), want, [last.inputs[0]])(values, given, into_seeds=True)
    np.testing.assert_allclose(got[want[0]], ref[want[0]], rtol=1e-12)
    assert not np.array_equal(given[last.output], seeds[last.output])  # the seed array took the sum


def test_missing_value_names_the_tensor_to_tap():
    graph = _zoo_graph("plain", True)
    out = graph.outputs[0]
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    need = needed_values(graph, [out], [convs[-1].inputs[1]])
    values = {n: np.ones((1,) + graph.infer_specs()[n].shape[1:], np.float32) for n in need[1:]}
    with pytest.raises(EdgertError, match=repr(need[0]) + ".*tap"):
        backward(graph, values, {out: np.ones((1, 10), np.float32)}, [convs[-1].inputs[1]])


def test_bad_names_and_unreachable_wanted_names():
    graph = CASES["linear"]()
    with pytest.raises(EdgertError, match="nope"):
        backward(graph, {}, {"y": np.ones((1, 5))}, ["nope"])
    two = ir.Graph(inputs=graph.inputs, nodes=graph.nodes + (ir.Relu(name="r", inputs=("x",), output="z"),),
                   outputs=("y", "z"), params=graph.params)
    with pytest.raises(EdgertError, match="no path"):
        backward(two, {}, {"z": np.ones((1, 7))}, ["w"])
