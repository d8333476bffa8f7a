import numpy as np
from numpy.testing import assert_array_equal

from edgert import ir
from edgert.compilers.passes.fold_binary_threshold import fold_binary_threshold
from edgert.ops.binary.threshold import thresholds
from edgert.ops.binary import BinaryConv2d, BinaryMaxPool2d, BitPack
from edgert.ops.reference import run_graph_ref

f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
X = (("x", ir.TensorSpec((None, 2, 4, 4))),)


def test_thresholds_hand_computed():
    # K = 9: a > 0: 2*dot + 3 < 0 <=> dot < -1.5 <=> dot < -1; a < 0: -2*dot + 3 < 0 <=> dot > 1.5 <=> not dot < 2;
    # a == 0: constant -1 < 0 (always -1: dot < 10) or 4 >= 0 (never: flipped)
    thr, flip = thresholds(np.array([2.0, -2.0, 0.0, 0.0]), np.array([3.0, 3.0, -1.0, 4.0]), 9)
    assert_array_equal(thr, [-1, 2, 10, 10])
    assert_array_equal(flip, [0, 1, 0, 1])
    dots = np.arange(-9, 10)
    for a, c, t, f in zip([2.0, -2.0, 0.0, 0.0], [3.0, 3.0, -1.0, 4.0], thr, flip):
        assert_array_equal((dots < t) != bool(f), a * dots + c < 0)


def _before(with_pool: bool) -> ir.Graph:
    conv = BinaryConv2d(name="c", inputs=("xb", "w", "s", "b"), output="y", in_channels=2, out_channels=3,
                        kernel=(1, 1))
    nodes = [BitPack(name="p0", inputs=("x",), output="xb", channels=2), conv,
             ir.BatchNorm(name="bn", inputs=("y", "g", "be", "m", "v"), output="z", eps=1.0)]
    if with_pool:
        nodes.append(ir.MaxPool2d(name="mp", inputs=("z",), output="zp"))
    nodes += [BitPack(name="p1", inputs=(nodes[-1].output,), output="out", channels=3)]
    w = np.array([[[[1]]], [[[2]]], [[[3]]]], np.uint64)  # 1-bit words: channel signs of each output
    return ir.Graph(inputs=X, nodes=tuple(nodes), outputs=("out",),
                    params={"w": w, "s": f32(1, 2, 1), "b": f32(0, 1, 0), "g": f32(2, -1, 0),
                            "be": f32(1, 0, -1), "m": f32(0.5, 0, 0), "v": f32(3, 3, 3)})


def test_folds_hand_computed_case():
    # inv = g / 2: a = s * inv = (1, -1, 0), c = (b - m) * inv + be = (0.5, -0.5, -1)
    # ch0: dot + 0.5 < 0 <=> dot < 0 (thr 0); ch1: -dot - 0.5 < 0 <=> dot > -0.5 <=> not dot < 0 (flip);
    # ch2: -1 < 0 always: thr K + 1 = 3
    expected = ir.Graph(
        inputs=X,
        nodes=(BitPack(name="p0", inputs=("x",), output="xb", channels=2),
               BinaryConv2d(name="c", inputs=("xb", "w", "c.threshold", "c.flip"), output="y", in_channels=2,
                            out_channels=3, kernel=(1, 1), output_kind="bits"),
               BinaryMaxPool2d(name="mp", inputs=("y",), output="out")),
        outputs=("out",),
        params={"w": _before(True).params["w"], "c.threshold": np.array([0, 0, 3], np.int32),
                "c.flip": np.array([0, 1, 0], np.uint8)})
    assert fold_binary_threshold(_before(True)) == expected


def test_folded_graph_computes_the_same():
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    for with_pool in (False, True):
        before = _before(with_pool)
        after = fold_binary_threshold(before)
        assert [n.op for n in after.nodes][-1] == ("binary_max_pool2d" if with_pool else "binary_conv2d")
        assert_array_equal(run_graph_ref(after, {"x": x})[0], run_graph_ref(before, {"x": x})[0])


def test_leaves_a_float_output_alone():
    g = _before(False)
    g = ir.Graph(inputs=g.inputs, nodes=g.nodes[:3], outputs=("z",), params=g.params)
    assert fold_binary_threshold(g) is g
