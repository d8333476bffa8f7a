import json

import numpy as np
import pytest

from edgert import ir
from edgert.errors import IRValidationError

X = (("x", ir.TensorSpec((None, 3, 10, 7))),)


def test_conv_shape_matches_hand_computation():
    # H: (10 + 1 + 2 - 2*(3-1) - 1) // 2 + 1 = 5; W: (7 + 0 + 0 - 3) // 1 + 1 = 5
    node = ir.Conv2d(name="c", inputs=("x", "w"), output="y", stride=(2, 1), padding=(1, 0, 2, 0),
                     dilation=(2, 1))
    assert node.infer([X[0][1], ir.TensorSpec((4, 3, 3, 3))]) == ir.TensorSpec((None, 4, 5, 5))


def test_ceil_mode_pool_drops_window_starting_in_right_padding():
    # torch: MaxPool2d(2, 2, padding=1, ceil_mode=True) on length 4 gives 3, not 4
    node = ir.MaxPool2d(name="m", inputs=("x",), output="y", kernel=2, stride=2, padding=1, ceil_mode=True)
    assert node.infer([ir.TensorSpec((1, 1, 4, 4))]).shape == (1, 1, 3, 3)


def test_json_round_trip_preserves_graph():
    g = ir.Graph(inputs=X, nodes=(
        ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1, groups=3),
        ir.Clip(name="r6", inputs=("y",), output="z", lo=0.0, hi=6.0),
        ir.MaxPool2d(name="p", inputs=("z",), output="p", kernel=3, stride=2, padding=1, ceil_mode=True),
        ir.Concat(name="cat", inputs=("p", "p"), output="cat", axis=1),
        ir.Reshape(name="r", inputs=("cat",), output="r", shape=(-1,)),
        ir.Softmax(name="s", inputs=("r",), output="s", axis=1)),
        outputs=("s",),
        params={"w": np.ones((6, 1, 3, 3), np.float32), "b": np.zeros(6, np.float32)})
    again = ir.Graph.from_json(json.loads(json.dumps(g.to_json())), g.params)
    assert again == g
    assert again.infer_specs()["s"] == ir.TensorSpec((None, 12 * 6 * 4))  # pool: ceil((10+2-3)/2)+1 = 6, ceil((7+2-3)/2)+1 = 4


def test_graph_collects_every_problem_in_one_error():
    g = ir.Graph(inputs=X, nodes=(
        ir.Relu(name="a", inputs=("nope",), output="y"),
        ir.Linear(name="l", inputs=("x", "w"), output="z")),
        outputs=("z", "missing"), params={"w": np.ones((2, 5), np.float32)})
    with pytest.raises(IRValidationError) as e:
        g.validate()
    msg = str(e.value)
    assert "'nope'" in msg and "weight must be (out_features, 7)" in msg and "'missing'" in msg


@pytest.mark.parametrize("make, fix", [
    (lambda: ir.Conv2d(name="c", inputs=("x", "w"), output="y", stride=0), "must be >= 1"),
    (lambda: ir.Flatten(name="f", inputs=("x",), output="y", start_dim=0), "use start_dim >= 1"),
    (lambda: ir.Clip(name="c", inputs=("x",), output="y", lo=1.0, hi=0.0), "must be <= hi"),
    (lambda: ir.Reshape(name="r", inputs=("x",), output="y", shape=(-1, -1)), "at most one -1"),
    (lambda: ir.TensorSpec((1, None)), "only dimension 0"),
])
def test_bad_attributes_name_the_fix(make, fix):
    with pytest.raises(IRValidationError, match=fix):
        make()


def test_params_are_read_only():
    g = ir.Graph(inputs=X, nodes=(), outputs=("x",), params={"w": np.ones(3, np.float32)})
    with pytest.raises(ValueError):
        g.params["w"][0] = 2


def test_matmul_of_operands_that_do_not_fit_names_the_fix():
    g = ir.Graph(inputs=(("a", ir.TensorSpec((None, 4, 5))), ("b", ir.TensorSpec((None, 6, 3)))),
                 nodes=(ir.MatMul(name="m", inputs=("a", "b"), output="y"),), outputs=("y",), params={})
    with pytest.raises(IRValidationError, match=r"\[\.\.\., M, K\] and \[\.\.\., K, N\]"):
        g.validate()
