import dataclasses

import numpy as np
from numpy.testing import assert_array_equal

from edgert import ir
from edgert.compilers.passes.schedule_mst import mst_report, schedule_mst
from edgert.ops.binary import BinaryConv2d, BitPack
from edgert.ops.reference import run_graph_ref

X = (("x", ir.TensorSpec((None, 64, 3, 3))),)


def _graph(w: np.ndarray) -> ir.Graph:
    o, kw = w.shape[0], w.shape[2]
    return ir.Graph(
        inputs=X,
        nodes=(BitPack(name="p", inputs=("x",), output="xb", channels=64),
               BinaryConv2d(name="c", inputs=("xb", "w", "s", "b"), output="y", in_channels=64, out_channels=o,
                            kernel=(1, kw), padding=(0, 1, 0, kw - 2))),
        outputs=("y",), params={"w": w, "s": np.ones(o, np.float32), "b": np.zeros(o, np.float32)})


def test_schedules_word_structured_weights_hand_case():
    # 3 channels over 4 words (kernel 1x4, one word per tap): c1 = c0 with word 3 changed, c2 = c1 with
    # word 1 changed; the tree c0 - c1 - c2 is rooted at its centre c1, each child costs 2 popcounts
    w = np.array([[[[1], [2], [3], [4]]], [[[1], [2], [3], [5]]], [[[1], [7], [3], [5]]]], np.uint64)
    g = _graph(w)
    expected_conv = dataclasses.replace(g.nodes[1], inputs=g.nodes[1].inputs + (
        "c.mst_order", "c.mst_parent", "c.mst_diff_ptr", "c.mst_diff_idx"))
    expected = ir.Graph(inputs=g.inputs, nodes=(g.nodes[0], expected_conv), outputs=g.outputs, params={
        **g.params, "c.mst_order": np.array([1, 0, 2], np.int32), "c.mst_parent": np.array([1, -1, 1], np.int32),
        "c.mst_diff_ptr": np.array([0, 1, 1, 2], np.int32), "c.mst_diff_idx": np.array([3, 1], np.int32)})
    assert schedule_mst(g, min_gain=1.1) == expected
    assert schedule_mst(g) is g  # 1.5x fewer words does not pay for the slower reuse kernel
    [row] = mst_report(g)
    assert row["depth"] == 1 and row["word_reduction"] == 12 / 8  # 4 + 2 + 2 words instead of 12
    x = np.random.default_rng(0).standard_normal((2, 64, 3, 3)).astype(np.float32)
    assert_array_equal(run_graph_ref(expected, {"x": x})[0], run_graph_ref(g, {"x": x})[0])


def test_random_weights_are_left_alone():
    from edgert.ops.binary.bits import pack_conv_weight
    g = _graph(pack_conv_weight(np.random.default_rng(0).standard_normal((16, 64, 1, 2))))
    assert schedule_mst(g) is g
