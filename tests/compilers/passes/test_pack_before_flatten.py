import numpy as np
from numpy.testing import assert_array_equal

from edgert import ir
from edgert.compilers.passes.pack_before_flatten import pack_before_flatten
from edgert.ops.binary import BinaryDense, BitPack
from edgert.ops.binary.bits import pack_dense_weight
from edgert.ops.binary.nodes import BitFlatten
from edgert.ops.reference import run_graph_ref

X = (("x", ir.TensorSpec((None, 64, 1, 2))),)


def _dense(weight: str) -> BinaryDense:
    return BinaryDense(name="d", inputs=("xb", weight, "s", "b"), output="y", in_features=128, out_features=3)


def test_hand_case_and_equivalence():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 128)).astype(np.float32)  # columns in (c, h, w) order
    common = {"s": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}
    before = ir.Graph(inputs=X, nodes=(ir.Flatten(name="f", inputs=("x",), output="flat"),
                                       BitPack(name="p", inputs=("flat",), output="xb", channels=128), _dense("w")),
                      outputs=("y",), params={"w": pack_dense_weight(w), **common})
    w_hwc = w.reshape(3, 64, 1, 2).transpose(0, 2, 3, 1).reshape(3, 128)
    expected = ir.Graph(inputs=X, nodes=(BitPack(name="p", inputs=("x",), output="xb.nhwc", channels=64),
                                         BitFlatten(name="f", inputs=("xb.nhwc",), output="xb"), _dense("d.weight_hwc")),
                        outputs=("y",), params={"d.weight_hwc": pack_dense_weight(w_hwc), **common})
    assert pack_before_flatten(before) == expected
    x = rng.standard_normal((4, 64, 1, 2)).astype(np.float32)
    assert_array_equal(run_graph_ref(expected, {"x": x})[0], run_graph_ref(before, {"x": x})[0])


def test_channels_not_a_multiple_of_64_are_left_alone():
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 3, 2, 2))),),
                 nodes=(ir.Flatten(name="f", inputs=("x",), output="flat"),
                        BitPack(name="p", inputs=("flat",), output="xb", channels=12),
                        BinaryDense(name="d", inputs=("xb", "w", "s", "b"), output="y", in_features=12, out_features=1)),
                 outputs=("y",), params={"w": np.zeros((1, 1), np.uint64), "s": np.ones(1, np.float32),
                                         "b": np.zeros(1, np.float32)})
    assert pack_before_flatten(g) is g
