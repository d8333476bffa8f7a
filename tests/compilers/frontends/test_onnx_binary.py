"""ONNX Sign -> Conv / MatMul with +-1 weights becomes XNOR-popcount layers, matching onnxruntime."""

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

import edgert
from edgert.compilers.compile import import_model, optimize


def _model(path) -> None:
    rng = np.random.default_rng(0)
    w1 = np.where(rng.standard_normal((70, 3, 3, 3)) >= 0, 1.0, -1.0).astype(np.float32)
    b1 = rng.standard_normal(70).astype(np.float32)
    w2 = np.where(rng.standard_normal((70 * 3 * 3, 5)) >= 0, 1.0, -1.0).astype(np.float32)  # MatMul: [K, O]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                       (np.array([0, -1], np.int64), "shape"))]
    nodes = [helper.make_node("Sign", ["x"], ["s"]),
             helper.make_node("Conv", ["s", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Sign", ["c"], ["s2"]),
             helper.make_node("Flatten", ["s2"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "binary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_sign_conv_pattern_becomes_binary_and_matches_onnxruntime(tmp_path):
    _model(tmp_path / "b.onnx")
    x = np.random.default_rng(1).standard_normal((4, 3, 6, 6)).astype(np.float32)  # no exact zeros
    want = onnxruntime.InferenceSession(str(tmp_path / "b.onnx")).run(None, {"x": x})[0]
    g = optimize(import_model(tmp_path / "b.onnx"))
    ops = [n.op for n in g.nodes]
    assert "binary_conv2d" in ops and "conv2d" not in ops
    engine = edgert.load(edgert.compile(tmp_path / "b.onnx", target="x86-host").save(tmp_path / "b.edgert"))
    np.testing.assert_array_equal(engine.run(x), want)
