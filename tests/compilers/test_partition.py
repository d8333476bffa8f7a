"""Mixed backends: TVM stages around kernel-backend nodes, stateless and stateful."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import edgert
from edgert import ir
from edgert.compilers.compile import build_artifact
from edgert.compilers.partition import choose_backends, partition
from edgert.ops.reference import EXTRA_RULES, run_graph_ref
from edgert.runtime.kernels import register_kernel


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class Negate(ir.Node):
    """y = -x, run by the kernel backend (a stand-in for a Numba op family)."""

    op: ClassVar[str] = "test_negate"
    backends: ClassVar[tuple[str, ...]] = ("numba",)


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class Accumulate(ir.Node):
    """y_t = y_{t-1} + x_t: a stateful kernel-backend op."""

    op: ClassVar[str] = "test_accumulate"
    backends: ClassVar[tuple[str, ...]] = ("numba",)
    stateful: ClassVar[bool] = True


register_kernel("test_negate")(lambda node, args, state: -args[0])


@register_kernel("test_accumulate")
def _accumulate(node, args, state):
    state["sum"] = state.get("sum", 0) + args[0]
    return state["sum"].copy()


EXTRA_RULES["test_negate"] = lambda node, args, spec, state: -args[0]
RNG = np.random.default_rng(0)


def _mixed() -> ir.Graph:
    p = lambda *s: RNG.standard_normal(s).astype(np.float32)  # noqa: E731
    return ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 2, 5, 5))),),
        nodes=(ir.Conv2d(name="c", inputs=("x", "w"), output="c"),
               Negate(name="neg", inputs=("c",), output="n"),
               ir.Relu(name="r", inputs=("n",), output="r"),
               ir.Add(name="a", inputs=("r", "c"), output="a"),  # reads across the kernel stage
               ir.Flatten(name="f", inputs=("a",), output="f"),
               ir.Linear(name="l", inputs=("f", "lw"), output="out")),
        outputs=("out",), params={"w": p(3, 2, 3, 3), "lw": p(4, 27)})


def test_partition_groups_tvm_runs_and_wires_values_across_stages():
    g = _mixed()
    stages = partition(g, choose_backends(g, ("tvm", "numba")))
    assert [(s.backend, [n.name for n in s.nodes]) for s in stages] == [
        ("tvm", ["c"]), ("numba", ["neg"]), ("tvm", ["r", "a", "f", "l"])]
    assert stages[0].outputs == ("c",)  # read by the kernel stage and by the add
    assert stages[2].inputs == ("n", "c")


def test_mixed_artifact_matches_reference(tmp_path):
    g = _mixed()
    engine = edgert.load(build_artifact(g, "x86-host").save(tmp_path / "m.edgert"))
    x = RNG.standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), run_graph_ref(g, {"x": x})[0], rtol=1e-5, atol=1e-5)
    kernels = engine.kernel_nodes()
    assert kernels["neg"] == ["neg"]
    assert [k for k, _ in engine.profile(x, repeat=2)].count("neg") == 1


def test_stateful_model_steps_resets_and_runs_over_time(tmp_path):
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 4))),),
                 nodes=(ir.Relu(name="r", inputs=("x",), output="r"),
                        Accumulate(name="acc", inputs=("r",), output="out")),
                 outputs=("out",))
    engine = edgert.load(build_artifact(g, "x86-host").save(tmp_path / "s.edgert"))
    xs = RNG.standard_normal((6, 2, 4)).astype(np.float32)  # T=6, batch 2
    want = np.cumsum(np.maximum(xs, 0), axis=0)
    np.testing.assert_allclose(engine.run(xs), want, rtol=1e-6)
    engine.reset()
    np.testing.assert_allclose(engine.step(xs[0]), want[0], rtol=1e-6)
    np.testing.assert_allclose(engine.step(xs[1]), want[1], rtol=1e-6)
    engine.reset()
    np.testing.assert_allclose(engine.step(xs[1]), np.maximum(xs[1], 0), rtol=1e-6)
