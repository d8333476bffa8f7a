"""Side adapters at compile time: the torch executor, the warm-up, the data checks, the compiled artifact."""

import numpy as np
import pytest

import edgert
from edgert.compilers.adapters import load_adapter_data, warm_up
from edgert.compilers.compile import import_model, optimize
from edgert.compilers.passes.insert_adapters import insert_adapters
from edgert.errors import EdgertError, InputError
from edgert.ops.reference import run_graph_ref
from edgert.runtime.engine import Engine
from tests.runtime.adapt.test_adapter import _model

torch = pytest.importorskip("torch")


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, n)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def graph():
    return optimize(import_model(_model(), np.zeros((1, 1, 6, 6), np.float32)))


def test_torch_executor_matches_reference(graph):
    from edgert.compilers.torch_graph import run_graph_torch

    g, _ = insert_adapters(graph)
    rng = np.random.default_rng(2)
    params = {k: rng.standard_normal(v.shape).astype(np.float32) if k.startswith("adapter.") else v
              for k, v in g.params.items()}
    g = type(g)(g.inputs, g.nodes, g.outputs, params)
    x = _data(5)[0]
    got = run_graph_torch(g, {"input": torch.from_numpy(x)}, {k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    np.testing.assert_allclose(got[g.outputs[0]].numpy(), run_graph_ref(g, {"input": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels", [True, False])
def test_warm_up_trains_only_adapter_params(graph, labels):
    g, adapters = insert_adapters(graph)
    x = _data()[0]
    before = run_graph_ref(g, {"input": x})[0]
    y = (before.argmax(1) + 1) % 3  # labels the frozen model gets wrong
    said = []
    warm, summary = warm_up(g, adapters, x, y if labels else None, 60, said.append)
    trained = {p for a in adapters for p in a.params}
    assert warm.nodes == g.nodes and warm.params.keys() == g.params.keys()
    for k, v in g.params.items():
        if k in trained:
            assert np.abs(warm.params[k] - v).max() > 1e-4, k
        else:
            np.testing.assert_array_equal(warm.params[k], v)
    assert summary["steps"] == 60 and summary["scored_against"] == ("labels" if labels else "frozen predictions")
    assert len(said) == 2 and said[-1].startswith("warming up 2 adapters on 96 samples")
    after = run_graph_ref(warm, {"input": x})[0]
    xent = lambda z: -np.mean(np.take_along_axis(z - np.log(np.exp(z).sum(1, keepdims=True)), y[:, None], 1))  # noqa: E731
    kl = lambda z: np.mean(np.sum(_softmax(before) * (np.log(_softmax(before)) - np.log(_softmax(z))), 1))  # noqa: E731
    if labels:  # the warm-up fits the labels
        assert xent(after) < xent(before) - 0.05
    else:       # distillation keeps the predictions of the frozen model
        assert kl(after) < 0.05 and summary["clean_accuracy_after"] > 0.9


def test_adapter_data_errors(tmp_path, graph):
    spec = graph.inputs[0][1]
    x, y = _data(8)
    cases = {"no_x.npz": ({"y": y}, "no array 'x'"),
             "shape.npz": ({"x": x[:, :, :5]}, r"x has shape \(8, 1, 5, 6\), the model input is Nx1x6x6"),
             "labels.npz": ({"x": x, "y": y[:5]}, "y has 5 labels for 8 samples"),
             "range.npz": ({"x": x, "y": y + 3}, "the model has 3 classes"),
             "float_y.npz": ({"x": x, "y": y.astype(np.float32)}, "y must be integer class labels"),
             "nan.npz": ({"x": np.where(x > 1, np.nan, x)}, "with NaN or Inf"),
             "extra.npz": ({"x": x, "labels": y}, r"unknown arrays \['labels'\]")}
    for name, (arrays, msg) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InputError, match=msg):
            load_adapter_data(tmp_path / name, spec, 3)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read adapter data"):
        load_adapter_data(tmp_path / "junk.npz", spec, 3)
    got_x, got_y = load_adapter_data({"x": x.astype(np.float64), "y": y}, spec, 3)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64


def test_adapter_data_without_adapters_is_refused():
    with pytest.raises(EdgertError, match="add --adapters"):
        edgert.compile(_model(), np.zeros((1, 1, 6, 6), np.float32), adapter_data={"x": _data(4)[0]})


def test_models_adapters_cannot_serve_are_refused():
    from edgert import ir
    from edgert.compilers.adapters import add_adapters

    x = (("x", ir.TensorSpec((None, 4))),)
    mlp = ir.Graph(x, (ir.Linear(name="fc", inputs=("x", "w"), output="y"),), ("y",),
                   {"w": np.ones((3, 4), np.float32)})
    with pytest.raises(EdgertError, match="no conv block"):
        add_adapters(mlp)
    two = ir.Graph(x, mlp.nodes + (ir.Relu(name="r", inputs=("y",), output="z"),), ("y", "z"), mlp.params)
    with pytest.raises(EdgertError, match=r"one input and one \[N, classes\] output"):
        add_adapters(two)
