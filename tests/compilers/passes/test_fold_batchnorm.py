import numpy as np

from edgert import ir
from edgert.compilers.passes import fold_batchnorm
from edgert.ops.reference import run_graph_ref

X = (("x", ir.TensorSpec((None, 1, 4, 4))),)
f32 = lambda *v: np.array(v, np.float32)  # noqa: E731


def _conv_bn(eps: float = 1.0) -> ir.Graph:
    return ir.Graph(
        inputs=X,
        nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y"),
               ir.BatchNorm(name="bn", inputs=("y", "g", "be", "m", "v"), output="z", eps=eps),
               ir.Relu(name="r", inputs=("z",), output="out")),
        outputs=("out",),
        params={"w": f32(2.0).reshape(1, 1, 1, 1), "b": f32(1.0), "g": f32(3.0), "be": f32(0.5),
                "m": f32(1.0), "v": f32(3.0)})


def test_folds_hand_computed_case():
    # scale = 3 / sqrt(3 + 1) = 1.5; w' = 2 * 1.5 = 3; b' = (1 - 1) * 1.5 + 0.5 = 0.5
    expected = ir.Graph(
        inputs=X,
        nodes=(ir.Conv2d(name="c", inputs=("x", "c.weight_folded", "c.bias_folded"), output="z"),
               ir.Relu(name="r", inputs=("z",), output="out")),
        outputs=("out",),
        params={"c.weight_folded": f32(3.0).reshape(1, 1, 1, 1), "c.bias_folded": f32(0.5)})
    assert fold_batchnorm(_conv_bn()) == expected


def test_folded_graph_computes_the_same():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((8, 3, 3, 3)), "b": rng.standard_normal(8),
              "g": rng.standard_normal(8), "be": rng.standard_normal(8), "m": rng.standard_normal(8),
              "v": rng.uniform(0.1, 3, 8), "lw": rng.standard_normal((5, 8)),
              "lg": rng.standard_normal(5), "lb": rng.standard_normal(5), "lm": rng.standard_normal(5),
              "lv": rng.uniform(0.1, 3, 5)}
    g = ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 3, 6, 6))),),
        nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1),
               ir.BatchNorm(name="bn", inputs=("y", "g", "be", "m", "v"), output="z"),
               ir.AdaptiveAvgPool2d(name="p", inputs=("z",), output="p"),
               ir.Flatten(name="f", inputs=("p",), output="f"),
               ir.Linear(name="l", inputs=("f", "lw"), output="l"),
               ir.BatchNorm(name="bn2", inputs=("l", "lg", "lb", "lm", "lv"), output="out")),
        outputs=("out",), params={k: v.astype(np.float32) for k, v in params.items()})
    folded = fold_batchnorm(g)
    assert [n.op for n in folded.nodes] == ["conv2d", "adaptive_avg_pool2d", "flatten", "linear"]
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_graph_ref(folded, {"x": x})[0], run_graph_ref(g, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_leaves_bn_whose_producer_output_is_shared():
    g = _conv_bn()
    shared = ir.Graph(inputs=g.inputs, nodes=g.nodes + (ir.Add(name="a", inputs=("y", "out"), output="s"),),
                      outputs=("s",), params=g.params)
    assert fold_batchnorm(shared) == shared


def test_folds_a_conv1d_batchnorm1d_through_the_reshape_between():
    import torch
    from torch import nn

    from edgert.compilers.frontends.torch import from_torch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 3, padding=2, dilation=2), nn.BatchNorm1d(6), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 11)
    folded = fold_batchnorm(from_torch(model, x[:1]))
    assert [n.op for n in folded.nodes] == ["reshape", "conv2d", "reshape", "relu"]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(run_graph_ref(folded, {"input": x.numpy()})[0], want, rtol=1e-5, atol=1e-5)
