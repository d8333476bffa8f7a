"""The int8 dot-product path: every variant this CPU runs is bit-exact with the shift reference, the
instructions are in the generated code, and layers it cannot hold exactly keep the Numba paths."""

import numpy as np
import pytest

from edgert import ir
from edgert.ops.reference import EXTRA_RULES
from edgert.ops.shift import codes, int8dot
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear
from edgert.ops.shift.register import run_shift_conv2d, run_shift_linear


def _variant_or_skip(variant):
    if variant not in int8dot.supported():
        missing = [f for f in int8dot.NEEDS[variant] if f not in int8dot.cpu_features()]
        pytest.skip(f"this CPU lacks {missing} for the {variant} variant")
    return variant


def _packed(rng, shape, bits, zero, top=None):
    n_exp = codes.n_exponents(bits, zero)
    m = rng.choice([-1, 1], shape) * 2 ** rng.integers(0, n_exp if top is None else top + 1, shape)
    if zero:
        m = np.where(rng.random(shape) < 0.2, 0, m)
    return codes.pack(codes.encode(m.astype(np.float64), bits, zero, 0), bits)


CONV_CASES = [  # (N, C, O, H, W, k, stride, padding, dilation, bits, zero, act_bits)
    (2, 3, 5, 9, 7, 3, 1, 1, 1, 3, False, 8),
    (1, 16, 40, 8, 8, 3, 1, 1, 1, 4, True, 8),       # 4-bit weights up to 2^6 (flush every step)
    (2, 6, 4, 7, 9, (1, 3), (2, 1), (0, 1), 1, 3, True, 6),
    (1, 8, 17, 11, 10, 3, 2, 2, 2, 3, False, 8),     # strided, dilated, 17 outputs (a partial block)
    (1, 64, 64, 12, 12, 3, 1, 1, 1, 3, False, 8),    # k = 576: many int16 flushes
]


@pytest.mark.parametrize("variant", int8dot.VARIANTS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_variant_is_bit_exact(variant, case):
    _variant_or_skip(variant)
    n, c, o, h, w, k, stride, padding, dilation, bits, zero, act_bits = case
    rng = np.random.default_rng(abs(hash(case)) % 2 ** 32)
    kh, kw = (k, k) if isinstance(k, int) else k
    top = 6 if bits == 4 else None
    packed = _packed(rng, (o, c, kh, kw), bits, zero, top)
    x = (rng.standard_normal((n, c, h, w)) * 3).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    node = ShiftConv2d(name="s", inputs=("x", "c", "b"), output="y", weight_shape=(o, c, kh, kw), stride=stride,
                       padding=padding, dilation=dilation, bits=bits, zero=zero, scale_exp=-4,
                       act_bits=act_bits, frac_bits=4, path="int_mac")
    spec = node.infer([ir.TensorSpec(x.shape), ir.TensorSpec(packed.shape, "uint8"), ir.TensorSpec(bias.shape)])
    state = {"int8_variant": variant}
    got = run_shift_conv2d(node, [x, packed, bias], state)
    assert state["weights"][2] is not None  # the int8 path ran
    want = EXTRA_RULES["shift_conv2d"](node, [x, packed, bias], spec, {})
    assert np.array_equal(got, want)


@pytest.mark.parametrize("variant", int8dot.VARIANTS)
@pytest.mark.parametrize("rows,k,o", [(1, 5, 3), (7, 300, 33)])
def test_linear_variant_is_bit_exact(variant, rows, k, o):
    _variant_or_skip(variant)
    rng = np.random.default_rng(rows * k)
    packed = _packed(rng, (o, k), 3, True)
    x = (rng.standard_normal((rows, k)) * 4).astype(np.float32)
    node = ShiftLinear(name="fc", inputs=("x", "c"), output="y", weight_shape=(o, k), bits=3, zero=True,
                       scale_exp=-2, act_bits=8, frac_bits=3, path="int_mac")
    spec = node.infer([ir.TensorSpec(x.shape), ir.TensorSpec(packed.shape, "uint8")])
    state = {"int8_variant": variant}
    assert np.array_equal(run_shift_linear(node, [x, packed], state),
                          EXTRA_RULES["shift_linear"](node, [x, packed], spec, {}))
    assert state["weights"][2] is not None


@pytest.mark.parametrize("variant,cpu,instructions", [
    ("avx2", "znver3", ("vpmaddubsw", "vpmaddwd", "vpaddw")),
    ("avx_vnni", "alderlake", ("{vex}\tvpdpbusd",)),  # the VEX (AVX-VNNI) encoding
    ("avx512_vnni", "icelake-server", ("vpdpbusd",)),
])
def test_generated_code_has_the_instructions(variant, cpu, instructions):
    asm = int8dot.assembly(variant, cpu)
    for ins in instructions:
        assert ins in asm, (variant, ins)
    if variant == "avx2":
        assert "vpdpbusd" not in asm


@pytest.mark.parametrize("bits,act_bits,top,path", [(5, 8, 8, "int_mac"), (3, 12, None, "int_mac"),
                                                    (3, 8, None, "shift_add")])
def test_layers_the_int8_path_cannot_hold_keep_the_numba_paths(bits, act_bits, top, path):
    """2^8 is no int8, 12-bit activations are no int8, and the shift_add path asked for shifts."""
    rng = np.random.default_rng(bits + act_bits)
    packed = _packed(rng, (4, 3, 3, 3), bits, False, top)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    node = ShiftConv2d(name="s", inputs=("x", "c"), output="y", weight_shape=(4, 3, 3, 3), padding=1, bits=bits,
                       act_bits=act_bits, frac_bits=4, path=path)
    spec = node.infer([ir.TensorSpec(x.shape), ir.TensorSpec(packed.shape, "uint8")])
    state = {"int8_variant": (int8dot.supported() or ["avx2"])[0]}
    got = run_shift_conv2d(node, [x, packed], state)
    assert state["weights"][2] is None
    assert np.array_equal(got, EXTRA_RULES["shift_conv2d"](node, [x, packed], spec, {}))


def test_dispatch_by_cpu_features_and_its_override(monkeypatch):
    assert int8dot.host_variant() == (int8dot.supported() or [None])[0]
    if "avx2" in int8dot.cpu_features():
        assert "avx2" in int8dot.supported()
    monkeypatch.setenv("EDGERT_SHIFT_INT8", "none")
    assert int8dot.host_variant() is None
    monkeypatch.setenv("EDGERT_SHIFT_INT8", "sse9")
    with pytest.raises(ValueError, match="unknown"):
        int8dot.host_variant()
    lacking = [v for v in int8dot.VARIANTS if v not in int8dot.supported()]
    if lacking:
        monkeypatch.setenv("EDGERT_SHIFT_INT8", lacking[0])
        with pytest.raises(ValueError, match="does not run on this CPU"):
            int8dot.host_variant()
