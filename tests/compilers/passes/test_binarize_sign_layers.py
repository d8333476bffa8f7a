import numpy as np
from numpy.testing import assert_array_equal

from edgert import ir
from edgert.compilers.passes.binarize_sign_layers import binarize_sign_layers
from edgert.ops.binary import BinaryConv2d, BinaryDense, BitPack
from edgert.ops.binary.nodes import BinarySign
from edgert.ops.reference import run_graph_ref

X = (("x", ir.TensorSpec((None, 2, 3, 3))),)


def _before(w: np.ndarray) -> ir.Graph:
    return ir.Graph(inputs=X, nodes=(BinarySign(name="s", inputs=("x",), output="sx"),
                                     ir.Conv2d(name="c", inputs=("sx", "w", "b"), output="y", padding=1)),
                    outputs=("y",), params={"w": w, "b": np.array([0.5, -1.0], np.float32)})


def test_hand_case():
    w = np.array([1, -1, -1, 1], np.float32).reshape(2, 2, 1, 1)
    expected = ir.Graph(
        inputs=X,
        nodes=(BitPack(name="c.pack", inputs=("x",), output="c.bits", channels=2),
               BinaryConv2d(name="c", inputs=("c.bits", "c.weight_bits", "c.scale", "c.bias"), output="y",
                            in_channels=2, out_channels=2, kernel=(1, 1), padding=(1, 1, 1, 1), pad_mode="zero")),
        outputs=("y",),
        params={"c.weight_bits": np.array([2, 1], np.uint64).reshape(2, 1, 1, 1),  # -1 at channel 1 / channel 0
                "c.scale": np.ones(2, np.float32), "c.bias": np.array([0.5, -1.0], np.float32)})
    assert binarize_sign_layers(_before(w)) == expected
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32)
    assert_array_equal(run_graph_ref(expected, {"x": x})[0], run_graph_ref(_before(w), {"x": x})[0])


def test_float_weights_and_shared_signs_are_kept():
    g = _before(np.full((2, 2, 1, 1), 0.5, np.float32))
    assert binarize_sign_layers(g) is g
    lin = ir.Graph(inputs=(("x", ir.TensorSpec((None, 3))),),
                   nodes=(BinarySign(name="s", inputs=("x",), output="sx"),
                          ir.Linear(name="l", inputs=("sx", "w"), output="y")),
                   outputs=("y", "sx"), params={"w": np.array([[1, -1, 1]], np.float32)})
    out = binarize_sign_layers(lin)
    assert [type(n) for n in out.nodes] == [BinarySign, BitPack, BinaryDense]  # the sign is still an output
