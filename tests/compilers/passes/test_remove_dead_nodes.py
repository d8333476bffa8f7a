import numpy as np

from edgert import ir
from edgert.compilers.passes import remove_dead_nodes


def test_drops_unreachable_nodes_and_their_params():
    x = (("x", ir.TensorSpec((None, 4))),)
    w = np.ones((3, 4), np.float32)
    before = ir.Graph(inputs=x,
                      nodes=(ir.Linear(name="dead", inputs=("x", "w_dead"), output="d"),
                             ir.Relu(name="r", inputs=("x",), output="y"),
                             ir.Linear(name="l", inputs=("y", "w"), output="out")),
                      outputs=("out",), params={"w": w, "w_dead": w})
    expected = ir.Graph(inputs=x,
                        nodes=(ir.Relu(name="r", inputs=("x",), output="y"),
                               ir.Linear(name="l", inputs=("y", "w"), output="out")),
                        outputs=("out",), params={"w": w})
    assert remove_dead_nodes(before) == expected
    assert remove_dead_nodes(expected) is expected
