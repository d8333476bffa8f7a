"""A small ONNX shift network as an exporter would write it: plain float weights that are all ±2^p
times a scale (Conv 8->16 3x3 with per-channel scales that are not powers of two -> Relu -> Flatten ->
Gemm with one power-of-two scale and 20% zeros). The test and the bench of passes/float_to_shift use it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (8, 12, 12)  # C, H, W


def pow2_weights(rng, shape, top, zeros=0.0):
    m = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(0, top + 1, shape)
    return np.where(rng.random(shape) < zeros, 0.0, m)


def shift_onnx(path, rng: np.random.Generator) -> onnx.ModelProto:
    """Write the model to ``path`` (input "x" [N, 8, 12, 12], output "y" [N, 10]) and return it."""
    scale = (0.37 + rng.random(16)) * 2.0 ** -5
    w_conv = (pow2_weights(rng, (16, 8, 3, 3), 3) * scale[:, None, None, None]).astype(np.float32)
    w_gemm = (pow2_weights(rng, (10, 16 * 12 * 12), 5, zeros=0.2) * 2.0 ** -9).astype(np.float32)
    inits = [numpy_helper.from_array(w_conv, "w_conv"),
             numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "b_conv"),
             numpy_helper.from_array(w_gemm, "w_gemm"),
             numpy_helper.from_array((0.1 * rng.standard_normal(10)).astype(np.float32), "b_gemm")]
    nodes = [helper.make_node("Conv", ["x", "w_conv", "b_conv"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w_gemm", "b_gemm"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "shift", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *INPUT_SHAPE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, path)
    return model


def fp32_bytes(model: onnx.ModelProto) -> int:
    """The float weights' bytes, as the ONNX file stores them."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
