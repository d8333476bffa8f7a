import numpy as np
import pytest

from edgert import ir
from edgert.compilers.passes.insert_adapters import insert_adapters
from edgert.ops.reference import run_graph_ref

X = (("x", ir.TensorSpec((None, 1, 4, 4))),)
f32 = lambda *v: np.array(v, np.float32)  # noqa: E731


def _two_blocks() -> ir.Graph:
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    u = lambda lo, hi, n: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
    return ir.Graph(
        inputs=X,
        nodes=(ir.Conv2d(name="c1", inputs=("x", "w1", "b1"), output="y1", padding=1),
               ir.BatchNorm(name="bn", inputs=("y1", "g", "be", "m", "v"), output="z1"),
               ir.Relu(name="r1", inputs=("z1",), output="h1"),
               ir.Conv2d(name="c2", inputs=("h1", "w2"), output="y2"),
               ir.MaxPool2d(name="p", inputs=("y2",), output="q"),
               ir.Flatten(name="f", inputs=("q",), output="flat"),
               ir.Linear(name="fc", inputs=("flat", "lw"), output="out")),
        outputs=("out",),
        params={"w1": r(3, 1, 3, 3), "b1": r(3), "g": u(0.5, 1.5, 3), "be": r(3), "m": r(3),
                "v": u(0.5, 2, 3), "w2": r(2, 3, 3, 3), "lw": r(4, 2)})


def test_inserts_one_block_after_each_conv_block():
    zeros = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    g = _two_blocks()
    n = {k.name: k for k in g.nodes}
    expected = ir.Graph(
        inputs=X,
        nodes=(n["c1"], n["bn"], n["r1"],
               ir.Conv2d(name="adapter.0.conv", inputs=("h1", "adapter.0.weight", "adapter.0.bias"),
                         output="adapter.0.side"),
               ir.Add(name="adapter.0.add", inputs=("h1", "adapter.0.side"), output="adapter.0.out"),
               ir.Conv2d(name="c2", inputs=("adapter.0.out", "w2"), output="y2"),
               ir.Conv2d(name="adapter.1.conv", inputs=("y2", "adapter.1.weight", "adapter.1.bias"),
                         output="adapter.1.side"),
               ir.Add(name="adapter.1.add", inputs=("y2", "adapter.1.side"), output="adapter.1.out"),
               ir.MaxPool2d(name="p", inputs=("adapter.1.out",), output="q"), n["f"], n["fc"]),
        outputs=("out",),
        params={**g.params, "adapter.0.weight": zeros(3, 3, 1, 1), "adapter.0.bias": zeros(3),
                "adapter.1.weight": zeros(2, 2, 1, 1), "adapter.1.bias": zeros(2)})
    got, adapters = insert_adapters(g)
    assert got == expected
    assert [(a.after, a.side, a.output, a.channels) for a in adapters] == [
        ("h1", "adapter.0.side", "adapter.0.out", 3), ("y2", "adapter.1.side", "adapter.1.out", 2)]


def test_zero_adapters_compute_the_same_and_nonzero_ones_add_the_side_branch():
    g = _two_blocks()
    x = np.random.default_rng(1).standard_normal((3, 1, 4, 4)).astype(np.float32)
    got, _ = insert_adapters(g)
    np.testing.assert_array_equal(run_graph_ref(got, {"x": x})[0], run_graph_ref(g, {"x": x})[0])
    # a 1x1 conv with weight a*I is h -> (1 + a) h: the same as scaling c2's weights (hand-derived)
    params = dict(got.params, **{"adapter.0.weight": (0.5 * np.eye(3, dtype=np.float32))[:, :, None, None]})
    scaled = ir.Graph(g.inputs, g.nodes, g.outputs, dict(g.params, w2=g.params["w2"] * 1.5))
    np.testing.assert_allclose(run_graph_ref(ir.Graph(got.inputs, got.nodes, got.outputs, params), {"x": x})[0],
                               run_graph_ref(scaled, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_graph_output_and_branch_points_are_rewired(shared):
    nodes = [ir.Conv2d(name="c", inputs=("x", "w"), output="y"), ir.Relu(name="r", inputs=("y",), output="h")]
    if shared:  # h feeds two consumers: the block still ends at h
        nodes += [ir.Relu(name="r2", inputs=("h",), output="a"), ir.Add(name="s", inputs=("h", "a"), output="out")]
    g = ir.Graph(X, tuple(nodes), ("out" if shared else "h",), {"w": np.ones((2, 1, 1, 1), np.float32)})
    got, adapters = insert_adapters(g)
    assert [a.after for a in adapters] == ["h"]
    readers = [n.name for n in got.nodes if "h" in n.inputs]
    assert readers == ["adapter.0.conv", "adapter.0.add"]
    assert got.outputs == (("out",) if shared else ("adapter.0.out",))


def test_low_rank_blocks_start_as_identity_and_compute_the_bottleneck():
    g = _two_blocks()
    x = np.random.default_rng(2).standard_normal((3, 1, 4, 4)).astype(np.float32)
    got, adapters = insert_adapters(g, [None, 1])
    assert [(a.rank, a.params) for a in adapters] == [
        (None, ("adapter.0.weight", "adapter.0.bias")),
        (1, ("adapter.1.down.weight", "adapter.1.down.bias", "adapter.1.up.weight", "adapter.1.up.bias"))]
    assert got.params["adapter.1.down.weight"].shape == (1, 2, 1, 1) and got.params["adapter.1.down.weight"].any()
    np.testing.assert_array_equal(run_graph_ref(got, {"x": x})[0], run_graph_ref(g, {"x": x})[0])
    # nonzero up weights: y2 + up(down(y2)) by hand (1x1 convs are per-pixel matrix products)
    rng = np.random.default_rng(3)
    p = dict(got.params, **{"adapter.1.up.weight": rng.standard_normal((2, 1, 1, 1)).astype(np.float32),
                            "adapter.1.up.bias": np.float32([0.5, -1.0]),
                            "adapter.1.down.bias": np.float32([0.25])})
    y2 = run_graph_ref(ir.Graph(g.inputs, g.nodes, ("y2",), g.params), {"x": x})[0]
    mid = np.einsum("rc,nchw->nrhw", p["adapter.1.down.weight"][:, :, 0, 0], y2) + 0.25
    side = (np.einsum("cr,nrhw->nchw", p["adapter.1.up.weight"][:, :, 0, 0], mid)
            + np.float32([0.5, -1.0])[:, None, None])
    g_side = ir.Graph(got.inputs, got.nodes, ("adapter.1.out",), p)
    np.testing.assert_allclose(run_graph_ref(g_side, {"x": x})[0], y2 + side, rtol=1e-5, atol=1e-5)
    assert insert_adapters(g, 5)[1][0].rank == 3  # capped at the channels
    with pytest.raises(ValueError, match="one per conv block"):
        insert_adapters(g, [2])
