"""Shared frontend helpers: reshape mapping keeps the batch, problems become one error."""

import pytest

from edgert import ir
from edgert.compilers.frontends._common import BatchChange, Problems, reshape_node
from edgert.errors import UnsupportedOpError


@pytest.mark.parametrize("in_shape,out_shape,expected", [
    ((None, 3, 2, 2), (None, 3, 2, 2), None),
    ((None, 3, 2, 2), (None, 12), ir.Flatten(name="n", inputs=("x",), output="y", start_dim=1)),
    ((None, 3, 2, 2), (None, 3, 4), ir.Flatten(name="n", inputs=("x",), output="y", start_dim=2)),
    ((None, 3, 2, 2), (None, 2, 6), ir.Reshape(name="n", inputs=("x",), output="y", shape=(2, 6))),
    ((None, 24, 2), (None, 24, 2, 1), ir.Reshape(name="n", inputs=("x",), output="y", shape=(24, 2, 1))),
    ((4, 3, 2), (4, 6), ir.Flatten(name="n", inputs=("x",), output="y", start_dim=1)),
])
def test_reshape_node_picks_flatten_or_reshape(in_shape, out_shape, expected):
    assert reshape_node("n", "x", "y", in_shape, out_shape) == expected


@pytest.mark.parametrize("in_shape,out_shape", [
    ((None, 3, 2, 2), ("12*N",)),
    ((None, 3, 2, 2), (1, "12*N")),
    ((4, 3, 2), (2, 12)),
    ((None, 3), ()),
])
def test_reshape_node_rejects_a_changed_batch(in_shape, out_shape):
    with pytest.raises(BatchChange, match="changes the batch dimension 0"):
        reshape_node("n", "x", "y", in_shape, out_shape)


def test_problems_raise_once_listing_each_line_and_the_fix():
    problems = Problems("from_test")
    problems.raise_if_any(["A"], "fix it")  # nothing collected: no error
    problems.add("Gelu", "node 'a'")
    problems.add("Gelu", "node 'a'")  # duplicates collapse
    problems.add("TopK", "node 'b'", "no converter")
    problems.note("a hint")
    with pytest.raises(UnsupportedOpError) as info:
        problems.raise_if_any(["Relu", "Conv", "Relu"], "fix it")
    assert str(info.value) == ("from_test: the model uses 2 operation(s) edgert cannot compile:\n"
                               "  Gelu at node 'a'\n  TopK at node 'b': no converter\nNote: a hint\n"
                               "Supported: Conv, Relu.\nfix it")
