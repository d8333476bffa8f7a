"""The C backend's emitter: arena planning, views, in-place nodes, inputs and outputs in place."""

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c import arena
from edgert.compilers.backends.c.emit import emit_c
from edgert.errors import UnsupportedOpError
from tests.compilers.backends.c.harness import needs_cc, reference, run_c


def test_plan_reuses_bytes_of_buffers_that_never_meet():
    bufs = [arena.Buffer("a", 100, 0, 1), arena.Buffer("b", 50, 1, 2), arena.Buffer("c", 100, 2, 3)]
    offsets, total = arena.plan(bufs)
    assert offsets["a"] == offsets["c"] == 0  # a and c never live together
    assert offsets["b"] >= 112  # b meets both; placed after a's aligned end
    assert total == arena.peak(bufs) == 112 + 64


def test_plan_never_overlaps_live_buffers():
    rng = np.random.default_rng(0)
    for _ in range(50):
        bufs = []
        for i in range(12):
            first = int(rng.integers(0, 10))
            bufs.append(arena.Buffer(f"b{i}", int(rng.integers(1, 300)), first, first + int(rng.integers(0, 4))))
        offsets, total = arena.plan(bufs)
        assert total >= arena.peak(bufs)
        for a in bufs:
            assert offsets[a.name] % arena.ALIGN == 0 and offsets[a.name] + a.size <= total
            for b in bufs:
                if a is not b and a.first <= b.last and b.first <= a.last:
                    assert (offsets[a.name] + a.size <= offsets[b.name]
                            or offsets[b.name] + b.size <= offsets[a.name])


def _chain() -> ir.Graph:
    # relu -> flatten (a view) -> relu (in place over the view) -> graph output
    nodes = (ir.Relu(name="r1", inputs=("x",), output="a"),
             ir.Flatten(name="f", inputs=("a",), output="b"),
             ir.Relu(name="r2", inputs=("b",), output="y"))
    return ir.Graph((("x", ir.TensorSpec((None, 2, 3))),), nodes, ("y", "a")).validate()


def test_views_and_outputs_in_place():
    m = emit_c(_chain())
    assert m.input_size == 6 and m.output_size == 12
    # "a" is a graph output, so it is written straight into the caller's output: no arena at all
    assert m.arena_bytes == 0
    assert "#define EDGERT_INPUT_SIZE 6" in m.files["model.h"]


@needs_cc
def test_chain_runs_on_the_host(tmp_path):
    g = _chain()
    x = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(np.float32)
    for got, want in zip(run_c(g, {"x": x}, tmp_path), reference(g, {"x": x})):
        np.testing.assert_array_equal(got, want)


def test_missing_ops_are_listed_in_one_error():
    g = ir.Graph((("x", ir.TensorSpec((None, 4))),),
                 (ir.Softmax(name="s", inputs=("x",), output="y"),), ("y",)).validate()
    import edgert.compilers.backends.c.emit as emit

    table = {k: v for k, v in emit.emitters().items() if k != "softmax"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(emit, "emitters", lambda: table)
        with pytest.raises(UnsupportedOpError, match="softmax"):
            emit_c(g)
