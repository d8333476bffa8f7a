"""from_onnx: exported zoo models match torch, hand-built graphs match onnxruntime, bad input names the fix."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgert import ir
from edgert.compilers.frontends.onnx import from_onnx
from edgert.errors import EdgertError, UnsupportedOpError
from edgert.ops.reference import run_graph_ref
from tests.compilers.frontends.test_torch import SoftplusAndSort, assert_matches_torch
from tests.zoo import ZOO


def export(model: nn.Module, example: torch.Tensor, path, **kwargs) -> None:
    """torch.onnx.export with a dynamic batch; the dynamo exporter unless kwargs say dynamo=False."""
    if kwargs.get("dynamo", True):
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kwargs.update(input_names=["x"], dynamic_axes={"x": {0: "N"}})
    torch.onnx.export(model, (example,), str(path), **kwargs)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_exported_zoo_model_matches_torch(name, tmp_path):
    model, example = ZOO[name]()
    export(model, example, tmp_path / "m.onnx")
    graph = from_onnx(tmp_path / "m.onnx")
    assert graph.inputs == (("input", ir.TensorSpec((None,) + tuple(example.shape[1:]))),)
    assert graph.outputs == ("output",)
    assert_matches_torch(graph, model, example)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated
@pytest.mark.parametrize("name,kwargs", [
    ("plain", {"optimize": False}),  # BatchNormalization, bias-less Conv given Expand(CastLike(0)) biases
    ("depthwise", {"optimize": False}),  # Clip bounds through CastLike, Identity
    ("strided", {"dynamo": False}),  # TorchScript exporter: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    ("multibranch", {"dynamo": False}),  # GlobalAveragePool, Flatten
])
def test_other_exporter_settings_match_torch(name, kwargs, tmp_path):
    model, example = ZOO[name]()
    export(model, example, tmp_path / "m.onnx", **kwargs)
    graph = from_onnx(str(tmp_path / "m.onnx"))
    assert graph.inputs[0][1].shape[0] is None
    if kwargs.get("optimize") is False and name == "plain":
        assert any(isinstance(n, ir.BatchNorm) for n in graph.nodes)
    assert_matches_torch(graph, model, example)


# ---- hand-built graphs, checked against onnxruntime ----

def _model(nodes, inits, in_shape, opset=18, out_shape=None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(v if isinstance(v, np.ndarray) else
                                       (0.3 * rng.standard_normal(v)).astype(np.float32), k)
               for k, v in inits.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in the output's shape


def assert_matches_onnxruntime(model: onnx.ModelProto, shape: tuple, batches=(1, 2)) -> ir.Graph:
    graph = from_onnx(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in batches:
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        (want,) = session.run(None, {"x": x})
        (got,) = run_graph_ref(graph, {"input": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))
    return graph


def test_conv_auto_pad_and_groups():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], auto_pad="SAME_UPPER", kernel_shape=[4, 3]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], auto_pad="SAME_LOWER", strides=[2, 2], kernel_shape=[4, 4]),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], auto_pad="VALID", group=2, dilations=[2, 1]),
        helper.make_node("Conv", ["c3", "w4"], ["y"], pads=[1, 0, 2, 1], strides=[1, 2]),
    ]
    inits = {"w1": (4, 3, 4, 3), "b1": (4,), "w2": (6, 4, 4, 4), "w3": (4, 3, 2, 2), "w4": (2, 4, 3, 3)}
    graph = assert_matches_onnxruntime(_model(nodes, inits, ["N", 3, 11, 9]), (3, 11, 9))
    assert [n.padding for n in graph.nodes[:2]] == [(1, 1, 2, 1), (2, 2, 1, 1)]


def test_matmul_add_becomes_one_linear_and_gemm_folds_alpha_beta():
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["m"]),
        helper.make_node("Add", ["m", "b1"], ["h"]),
        helper.make_node("Max", ["h", "zero"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["g"], alpha=0.5, beta=2.0),
        helper.make_node("Clip", ["g", "lo"], ["c"]),
        helper.make_node("Softmax", ["c"], ["y"]),
    ]
    inits = {"w1": (12, 6), "b1": (6,), "zero": np.array(0.0, np.float32), "w2": (6, 5), "b2": (1, 5),
             "lo": np.array(-0.3, np.float32)}
    graph = assert_matches_onnxruntime(_model(nodes, inits, ["N", 3, 2, 2]), (3, 2, 2))
    assert [n.op for n in graph.nodes] == ["flatten", "linear", "clip", "linear", "clip", "softmax"]


def test_pools_reshapes_and_identities():
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 0, 1]),
        helper.make_node("Dropout", ["p"], ["d"]),
        helper.make_node("Identity", ["d"], ["i"]),  # (N, 3, 2, 8)
        helper.make_node("Reshape", ["i", "copy_batch"], ["r1"]),  # (N, 48)
        helper.make_node("Unsqueeze", ["r1", "axes12"], ["u"]),  # (N, 1, 1, 48)
        helper.make_node("GlobalMaxPool", ["u"], ["g"]),  # (N, 1, 1, 1)
        helper.make_node("Reshape", ["u", "infer_batch"], ["r2"]),  # (N, 24, 2)
        helper.make_node("Unsqueeze", ["r2", "axes3"], ["r3"]),  # (N, 24, 2, 1)
        helper.make_node("ReduceMean", ["r3", "axes23"], ["mean"], keepdims=0),  # (N, 24)
        helper.make_node("Squeeze", ["g", "axes23"], ["gs"]),  # (N, 1)
        helper.make_node("Add", ["mean", "gs"], ["s"]),
        helper.make_node("Min", ["s", "half"], ["y"]),
    ]
    inits = {"copy_batch": np.array([0, -1]), "axes12": np.array([1, 2]), "infer_batch": np.array([-1, 24, 2]),
             "axes3": np.array([3]), "axes23": np.array([2, 3]), "half": np.array(0.5, np.float32)}
    assert_matches_onnxruntime(_model(nodes, inits, ["N", 3, 5, 8]), (3, 5, 8))


def test_fixed_batch_and_old_opset_clip_and_batchnorm():
    nodes = [
        helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Clip", ["bn"], ["y"], min=-0.5, max=0.7),
    ]
    inits = {"g": (3,), "b": (3,), "m": (3,), "v": np.array([0.5, 1.0, 2.0], np.float32)}
    model = _model(nodes, inits, [2, 3, 4, 4], opset=9)
    graph = assert_matches_onnxruntime(model, (3, 4, 4), batches=(2,))
    assert graph.inputs[0][1].shape == (2, 3, 4, 4)
    assert graph.nodes[1] == ir.Clip(name="Clip", inputs=(graph.nodes[0].output,), output="output", lo=-0.5,
                                    hi=float(np.float32(0.7)))  # ONNX attributes are float32


# ---- errors ----

def test_unsupported_ops_are_reported_together_with_their_torch_module(tmp_path):
    export(SoftplusAndSort().eval(), torch.zeros(1, 3, 8, 8), tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        from_onnx(tmp_path / "bad.onnx")
    msg = str(info.value)
    softplus = next(line for line in msg.splitlines() if line.strip().startswith("Softplus"))
    assert "node '" in softplus and "act: torch.nn.modules.activation.Softplus" in softplus
    assert "TopK at node" in msg
    assert "Supported: " in msg and "Conv" in msg and "onnx_ops.py" in msg


class Adaptive(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def test_adaptive_pool_that_onnx_decomposes_gets_a_hint(tmp_path):
    export(Adaptive().eval(), torch.zeros(1, 2, 5, 5), tmp_path / "adaptive.onnx")
    with pytest.raises(UnsupportedOpError, match="GatherND(.|\n)*not a multiple of the output size"):
        from_onnx(tmp_path / "adaptive.onnx")


@pytest.mark.parametrize("shape,expected", [
    (np.array([-1]), "changes the batch dimension 0"),
    (np.array([2, -1]), "changes the batch dimension 0"),
    (np.array([0, 2, -1]), None),
])
def test_reshape_must_keep_the_batch(shape, expected):
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": shape}, ["N", 3, 2, 2])
    if expected is None:
        assert [n.op for n in from_onnx(model).nodes] == ["reshape"]
    else:
        with pytest.raises(UnsupportedOpError, match=expected):
            from_onnx(model)


def test_model_with_two_inputs_is_an_edgert_error():
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(EdgertError, match="exactly one input"):
        from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("content,expected", [
    (b"\x08\x07garbage that is not protobuf \xff\xfe", "not a (readable|valid) ONNX model"),
    (b"", "not a valid ONNX model"),
    ("truncated", "not a (readable|valid) ONNX model"),
    (None, "no such file"),
])
def test_bad_files_give_edgert_errors(tmp_path, content, expected):
    path = tmp_path / "model.onnx"
    if content == "truncated":
        model, example = ZOO["strided"]()
        export(model, example, path, dynamo=False)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(EdgertError, match=expected):
        from_onnx(path)


def test_wrong_argument_type_is_an_edgert_error():
    with pytest.raises(EdgertError, match="path of an .onnx file or an onnx.ModelProto"):
        from_onnx(42)


def test_shape_arithmetic_keeps_the_batch_symbolic_and_folds_the_rest():
    """y = x.reshape(N, C * H * W) computed the long way: Shape, Gather, Mul, Unsqueeze, Concat."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Slice", ["shape", "one", "four"], ["chw"]),
        helper.make_node("ReduceProd", ["chw"], ["features"], keepdims=1),
        helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "features"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    inits = {"zero": np.array(0), "one": np.array([1]), "four": np.array([4]), "zero_axes": np.array([0])}
    model = _model(nodes, inits, ["N", 3, 2, 2], opset=13, out_shape=["N", 12])
    graph = assert_matches_onnxruntime(model, (3, 2, 2))
    assert [n.op for n in graph.nodes] == ["flatten", "relu"]
