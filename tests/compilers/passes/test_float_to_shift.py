"""float_to_shift: ONNX convs/Gemms with ±2^p weights become shift layers, small and close to onnxruntime."""

import numpy as np
import onnxruntime
import pytest

import edgert
from edgert import ir
from edgert.compilers.compile import compile_model, optimize
from edgert.compilers.frontends.onnx import from_onnx
from edgert.compilers.passes.float_to_shift import float_to_shift, relative_error, shift_form
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear
from edgert.compilers.passes.select_shift_path import select_shift_path
from tests.compilers.backends.c.harness import needs_cc, reference, run_c
from tools.models.shift_onnx import pow2_weights, fp32_bytes, shift_onnx


def test_shift_form_finds_per_tensor_and_per_channel_scales():
    rng = np.random.default_rng(0)
    m = pow2_weights(rng, (4, 3, 3, 3), 2)
    got_m, base, bits, zero = shift_form((m * 0.75).astype(np.float32))
    assert bits == 3 and not zero and np.allclose(base, 0.75)
    assert np.array_equal(got_m * base[:, None, None, None], m * 0.75)
    per_channel = m * np.array([0.3, 0.5, 0.7, 1.1])[:, None, None, None]
    got_m, base, bits, zero = shift_form(per_channel.astype(np.float32))
    assert np.allclose(got_m * base[:, None, None, None], per_channel.astype(np.float32), rtol=1e-7, atol=0)
    with_zeros = pow2_weights(rng, m.shape, 5, zeros=0.3)
    with_zeros.flat[:2] = 1, -32  # exponents 0..5 and zero: 4 bits
    assert shift_form(with_zeros)[2:] == (4, True)
    assert shift_form(m + 0.1) is None                       # not powers of two
    assert shift_form(m * 2.0 ** rng.integers(0, 20, m.shape)) is None  # spans more than 5 bits hold


def test_onnx_shift_model_is_small_and_close_to_onnxruntime(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "shift.onnx"
    model = shift_onnx(path, rng)
    x = rng.random((4, 8, 12, 12)).astype(np.float32)  # positive inputs
    calib = rng.random((8, 8, 12, 12)).astype(np.float32)
    messages = []
    art = compile_model(path, calib, target="x86-host", progress=messages.append)
    kinds = {type(n) for n in art.graph.nodes}
    assert {ShiftConv2d, ShiftLinear} <= kinds and ir.Conv2d not in kinds and ir.Linear not in kinds
    conv = next(n for n in art.graph.nodes if isinstance(n, ShiftConv2d))
    assert (conv.bits, conv.act_bits) == (3, 8)

    stored = sum(a.nbytes for a in art.params.values())
    assert fp32_bytes(model) / stored >= 6, (fp32_bytes(model), stored)

    want = onnxruntime.InferenceSession(str(path)).run(None, {"x": x})[0]
    art.save(tmp_path / "m.edgert")
    got = edgert.load(tmp_path / "m.edgert").run(x)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 0.03, err
    report = next(m for m in messages if "shift layers" in m)
    assert "relative error" in report
    # the reported figure is the same measure on the calibration batch, against the float graph
    float_graph = from_onnx(path)
    name = float_graph.inputs[0][0]
    assert relative_error(float_graph, float_to_shift(float_graph, {name: calib}), {name: x}) < 0.03


def test_without_calibration_the_default_is_16_bit_activations():
    rng = np.random.default_rng(2)
    w = (pow2_weights(rng, (6, 5), 2) * 2.0 ** -3).astype(np.float32)
    g = ir.Graph((("x", ir.TensorSpec((None, 5))),), (ir.Linear(name="fc", inputs=("x", "w"), output="y"),),
                 ("y",), {"w": w})
    shifted = float_to_shift(g)
    (node,) = shifted.nodes
    assert isinstance(node, ShiftLinear) and (node.act_bits, node.frac_bits, node.scale_exp) == (16, 8, -3)
    x = rng.random((3, 5)).astype(np.float32)
    assert relative_error(g, shifted, {"x": x}) < 1e-2


def test_layers_of_other_weights_stay_float():
    g = ir.Graph((("x", ir.TensorSpec((None, 2))),), (ir.Linear(name="fc", inputs=("x", "w"), output="y"),),
                 ("y",), {"w": np.array([[1.0, 0.3], [2.0, 4.0]], np.float32)})
    assert float_to_shift(g) is g


@needs_cc
def test_converted_onnx_model_runs_in_c_as_the_reference(tmp_path):
    """The microcontroller backend takes the converted graph (shift layers, the per-channel mul and
    the bias add) and matches the reference bit for bit."""
    rng = np.random.default_rng(4)
    shift_onnx(tmp_path / "shift.onnx", rng)
    graph = from_onnx(tmp_path / "shift.onnx")
    name = graph.inputs[0][0]
    shifted = select_shift_path(optimize(float_to_shift(graph, {name: rng.random((4, 8, 12, 12), np.float32)})),
                                "int_mac")
    assert any(isinstance(n, ir.Mul) for n in shifted.nodes)
    x = rng.random((3, 8, 12, 12), np.float32)
    got, = run_c(shifted, {name: x}, tmp_path, sanitize=False)
    want, = reference(shifted, {name: x})
    np.testing.assert_array_equal(got, want)


def test_channels_too_far_apart_for_one_scale_take_one_each():
    rng = np.random.default_rng(5)
    m = pow2_weights(rng, (2, 4, 3, 3), 3)
    w = m * np.array([1.0, 2.0 ** 16])[:, None, None, None]  # one scale would need exponents 0..19
    got_m, base, bits, _ = shift_form(w)
    assert bits == 3 and list(base) == [1.0, 2.0 ** 16] and np.array_equal(got_m, m)


def test_a_calibration_of_zeros_gives_the_default():
    rng = np.random.default_rng(6)
    w = (pow2_weights(rng, (6, 5), 2) * 2.0 ** -3).astype(np.float32)
    g = ir.Graph((("x", ir.TensorSpec((None, 5))),), (ir.Linear(name="fc", inputs=("x", "w"), output="y"),),
                 ("y",), {"w": w})
    (node,) = float_to_shift(g, {"x": np.zeros((2, 5), np.float32)}).nodes
    assert (node.act_bits, node.frac_bits) == (16, 8)
    (node,) = float_to_shift(g, {"x": np.full((2, 5), 3.0, np.float32)}).nodes
    assert (node.act_bits, node.frac_bits) == (8, 5)  # 3 * 2^5 = 96 <= 127 < 3 * 2^6


def test_a_batchnorm_after_a_shift_conv_stays_adaptable(tmp_path):
    """compile converts before folding BatchNorm, which would merge it into the weights' scale."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgert.runtime.adapt import make_policy

    rng = np.random.default_rng(8)
    w = (pow2_weights(rng, (8, 4, 3, 3), 3) * 2.0 ** -4).astype(np.float32)
    bn = [rng.random(8) + 0.5, 0.1 * rng.standard_normal(8), 0.1 * rng.standard_normal(8), rng.random(8) + 0.5]
    inits = [numpy_helper.from_array(w, "w")] + [numpy_helper.from_array(v.astype(np.float32), k)
                                                 for k, v in zip("gbmv", bn)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "bn.onnx")
    x = rng.random((2, 4, 6, 6)).astype(np.float32)
    art = compile_model(tmp_path / "bn.onnx", x, target="x86-host")
    assert [n.op for n in art.graph.nodes] == ["shift_conv2d", "batch_norm"]
    art.save(tmp_path / "bn.edgert")
    policy = make_policy("norm", edgert.load(tmp_path / "bn.edgert"))
    policy.run(x)
    assert policy.stats()["layers"] == 1 and policy.stats()["updates"] == 1
