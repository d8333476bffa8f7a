"""The C shift kernels against the NumPy reference, bit for bit: conv (stride, padding, dilation,
groups, depthwise) and dense, 3/4/5-bit codes with and without the zero code, int8 and int16
fixed-point inputs, inputs on the clamp and on exact .5 rounding ties, int32 and int64 sums."""

import shutil

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.backends.c.emit import emit_c
from edgert.compilers.backends.c.ops_shift import acc_ctype, conv_block
from edgert.errors import UnsupportedOpError
from edgert.ops.shift import codes
from edgert.ops.shift import kernels as shift_kernels
from edgert.ops.shift.nodes import ShiftConv2d, ShiftLinear
from tests.compilers.backends.c.harness import needs_cc, reference, run_c

N = 3  # samples per build


def _inputs(rng, shape, act_bits, frac_bits) -> np.ndarray:
    """Fixed-point values past both ends of the clamp, exact .5 ties (both parities) and arbitrary
    fractions, scaled by 2^-frac_bits (exact in float32)."""
    lim = 2 ** (act_bits - 1)
    whole = rng.integers(-lim - 6, lim + 6, shape)
    frac = rng.choice(np.array([0.0, 0.5, -0.5, 0.25, 0.7]), shape)
    v = (whole + frac).ravel()
    edges = np.array([lim - 0.5, lim + 0.5, lim + 9, -lim - 0.5, -lim + 0.5, -lim - 9.0])
    at = rng.choice(v.size, min(v.size, max(len(edges), v.size // 10)), replace=False)
    v[at] = rng.choice(edges, at.size)  # the clamp's edges and ties, whatever act_bits
    v[at[:len(edges)]] = edges[:at.size]
    return (v.reshape(shape) * 2.0 ** -frac_bits).astype(np.float32)


def _codes(rng, count, bits, zero, top=None):
    """Random packed codes; ``top`` forces every weight to +2^top (the largest sums)."""
    c = rng.integers(0, 2 ** bits, count).astype(np.uint8)
    if top is not None:
        c[:] = top
    return codes.pack(c, bits)


class _Cases:
    """Several independent shift nodes in one graph (one host build), each on its own input."""

    def __init__(self, seed, prefix):
        self.rng, self.prefix = np.random.default_rng(seed), prefix
        self.inputs, self.nodes, self.params, self.feeds = [], [], {}, {}

    def add(self, cls, in_shape, weight_shape, bias, top=None, **kw):
        i = f"{self.prefix}{len(self.nodes)}"
        kw.setdefault("scale_exp", int(self.rng.integers(-6, 2)))
        node = cls(name=f"n{i}", inputs=(f"x{i}", f"w{i}") + ((f"b{i}",) if bias else ()), output=f"y{i}",
                   weight_shape=weight_shape, **kw)
        self.params[f"w{i}"] = _codes(self.rng, int(np.prod(weight_shape)), node.bits, node.zero, top)
        if bias:
            self.params[f"b{i}"] = self.rng.standard_normal(weight_shape[0]).astype(np.float32)
        self.inputs.append((f"x{i}", ir.TensorSpec((None,) + in_shape)))
        x = _inputs(self.rng, (N,) + in_shape, node.act_bits, node.frac_bits)
        if top is not None:  # the largest sums: samples 0 and 1 on the clamp, every value one sign
            big = 2.0 ** (node.act_bits + 1 - node.frac_bits)
            x[0], x[1] = big, -big
        self.feeds[f"x{i}"] = x
        self.nodes.append(node)

    def __add__(self, other: "_Cases") -> "_Cases":
        both = _Cases(0, self.prefix + other.prefix)
        for k in ("inputs", "nodes"):
            setattr(both, k, getattr(self, k) + getattr(other, k))
        both.params, both.feeds = {**self.params, **other.params}, {**self.feeds, **other.feeds}
        return both

    def graph(self) -> ir.Graph:
        return ir.Graph(tuple(self.inputs), tuple(self.nodes), tuple(n.output for n in self.nodes),
                        self.params).validate()


def _check(cases: _Cases, tmp_path) -> None:
    g = cases.graph()
    for node, got, want in zip(g.nodes, run_c(g, cases.feeds, tmp_path), reference(g, cases.feeds)):
        np.testing.assert_array_equal(got, want, err_msg=str(node))


def _conv_cases() -> _Cases:
    cs = _Cases(0, "c")
    C = ShiftConv2d
    # odd channels, stride 2, uneven padding, 3 bits zero-free, with bias
    cs.add(C, (3, 9, 8), (5, 3, 3, 3), True, bits=3, act_bits=8, frac_bits=4, stride=2, padding=(1, 2, 0, 1))
    # groups 2, dilation, zero code, 6-bit activations, frac_bits 0, no bias
    cs.add(C, (4, 7, 9), (6, 2, 3, 2), False, bits=4, zero=True, act_bits=6, frac_bits=0, groups=2,
           dilation=(2, 1), padding=2)
    # depthwise, 5 bits, stride (1, 2)
    cs.add(C, (5, 6, 7), (5, 1, 3, 3), True, bits=5, act_bits=8, frac_bits=2, groups=5, stride=(1, 2),
           padding=1)
    # 1x1, int16 fixed point (act_bits 12), zero code
    cs.add(C, (7, 4, 5), (3, 7, 1, 1), True, bits=3, zero=True, act_bits=12, frac_bits=7)
    # padding wider than the dilated kernel reaches: border outputs see no input at all
    cs.add(C, (2, 3, 3), (3, 2, 3, 3), True, bits=4, act_bits=8, frac_bits=3, padding=(4, 3, 2, 5),
           dilation=2)
    # stride 3, a 5x1 kernel, 4-bit activations
    cs.add(C, (3, 11, 6), (4, 3, 5, 1), False, bits=4, act_bits=4, frac_bits=1, stride=3,
           padding=(0, 2, 1, 0))
    # several blocks of output channels in each group (288 taps: 7 filters a block), an odd last one
    cs.add(C, (64, 5, 5), (18, 32, 3, 3), True, bits=3, act_bits=8, frac_bits=5, groups=2, padding=1)
    # int64 sums: 16-bit inputs on the clamp times +2^15 weights reach 36 * 2^30
    cs.add(C, (4, 5, 5), (2, 4, 3, 3), True, top=15, bits=5, act_bits=16, frac_bits=0, scale_exp=-20)
    cs.add(C, (4, 5, 5), (3, 4, 3, 3), False, bits=5, act_bits=16, frac_bits=3, padding=1)
    # 5-bit zero-free weights (up to 2^15: 32-bit filters) on int16 inputs with int32 sums
    cs.add(C, (2, 4, 4), (3, 2, 2, 2), True, bits=5, act_bits=10, frac_bits=2, stride=2)
    # int64 sums on int8 inputs: 1024 taps of +2^15 on inputs at the clamp
    cs.add(C, (64, 4, 4), (2, 64, 4, 4), True, top=15, bits=5, act_bits=8, frac_bits=0, scale_exp=-20)
    return cs


def _linear_cases() -> _Cases:
    cs = _Cases(1, "l")
    L = ShiftLinear
    cs.add(L, (37,), (11, 37), True, bits=3, act_bits=8, frac_bits=3)
    cs.add(L, (20,), (7, 20), False, bits=4, zero=True, act_bits=5, frac_bits=0)
    cs.add(L, (4, 13), (6, 13), True, bits=5, act_bits=16, frac_bits=9)  # rows of a 3-d input
    cs.add(L, (1,), (3, 1), True, bits=3, zero=True, act_bits=2, frac_bits=1)
    cs.add(L, (64,), (3, 64), True, top=15, bits=5, act_bits=16, frac_bits=0, scale_exp=-24)  # int64
    cs.add(L, (50,), (9, 50), False, bits=5, zero=True, act_bits=16, frac_bits=2)
    cs.add(L, (30,), (5, 30), True, bits=3, act_bits=12, frac_bits=4)  # int16 inputs, int32 sums
    cs.add(L, (600,), (2, 600), True, top=15, bits=5, act_bits=8, frac_bits=0, scale_exp=-20)  # int64
    # 5-bit zero-free weights (up to 2^15: 32-bit weights) with int32 sums, int8 and int16 inputs
    cs.add(L, (21,), (4, 21), True, bits=5, act_bits=8, frac_bits=3)
    cs.add(L, (21,), (5, 21), False, bits=5, act_bits=10, frac_bits=1)
    cs.add(L, (301,), (5, 301), True, bits=4, act_bits=8, frac_bits=6)  # chunks of 128, an odd last one
    return cs


@needs_cc
def test_shift_conv2d_is_bit_exact(tmp_path):
    _check(_conv_cases(), tmp_path)


@needs_cc
def test_shift_linear_is_bit_exact(tmp_path):
    _check(_linear_cases(), tmp_path)


needs_board = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="arm-none-eabi-gcc or qemu-system-arm is not installed (tools/board/setup_mcu.sh)")


@needs_board
@pytest.mark.slow
@pytest.mark.parametrize("target", ["stm32h7", "nrf52840"])  # Cortex-M7, Cortex-M4F
def test_bit_exact_on_the_emulated_core(target, tmp_path):
    """Every conv and dense case built for the core (arm-none-eabi-gcc -O2, warnings as errors for
    shift.c) and run on QEMU: the same integers, the same float roundings (no FMA contraction)."""
    from edgert.compilers.backends.c.firmware import build_firmware
    from edgert.runtime.emulated import EmulatedBoard
    from edgert.targets import load_target
    from tests.compilers.backends.c.harness import _records

    cs = _conv_cases() + _linear_cases()
    g = cs.graph()
    model = emit_c(g)
    flags = {k: list(v) for k, v in model.flags.items()}
    flags["kernels/shift.c"] += ["-Wall", "-Wextra", "-Werror", "-Wdouble-promotion"]
    c = load_target(target).c
    fw = build_firmware(model.files, c, tmp_path, flags)
    got = EmulatedBoard(fw.elf, c, model.input_size, model.output_size).run(_records(g, cs.feeds))
    want = np.concatenate([w.reshape(N, -1) for w in reference(g, cs.feeds)], axis=1)
    np.testing.assert_array_equal(got, want)


def test_conv_blocks_fit_the_filter_scratch():
    assert conv_block(9, 288) == 7 and conv_block(64, 144) == 14 and conv_block(64, 27) == 16
    assert conv_block(1, 9) == 1 and conv_block(64, 4096) == 1  # one filter, even past the budget


def test_every_kernel_variant_is_exercised():
    """Each case picks its kernel at compile time: x_q int8 or int16, sums int32 or int64, and for a
    conv 16-bit filters (SMLAD) when every multiplier fits; the cases cover every kernel, and the
    forced +2^15 ones really leave int32 (so the int64 path is exercised, not just chosen)."""
    kernels = {"conv2d": ["q8_h", "q16_h", "q8_a32", "q16_a32", "q8_a64", "q16_a64"],
               "linear": ["q8_h", "q16_h", "q8_a32", "q16_a32", "q8_a64", "q16_a64"]}
    for cs, kernel, forced in ((_conv_cases(), "conv2d", [7, 10]), (_linear_cases(), "linear", [4, 7])):
        g = cs.graph()
        kinds = [acc_ctype(n, g, int(np.prod(n.weight_shape[1:]))) for n in g.nodes]
        assert all(kinds[i] == "int64_t" for i in forced), kinds
        calls = emit_c(g).files["model.c"]
        for v in kernels[kernel]:
            assert f"ek_shift_{kernel}_{v}(" in calls, v
        for i in forced:
            out = reference(g, cs.feeds)[i]
            assert np.abs(out).max() * 2.0 ** -g.nodes[i].scale_exp > 2 ** 31  # frac_bits 0


def test_int32_sums_where_the_weights_prove_them():
    """The bound comes from the actual weights: 13 weights of ±1 on 16-bit inputs fit int32, where
    the worst case of any 13 five-bit weights (kernels.acc_dtype) would not."""
    node = ShiftLinear(name="l", inputs=("x", "w"), output="y", bits=5, act_bits=16, weight_shape=(2, 13))
    w = codes.pack(np.array([0, 16] * 13, np.uint8), 5)
    g = ir.Graph((("x", ir.TensorSpec((None, 13))),), (node,), ("y",), {"w": w}).validate()
    assert acc_ctype(node, g, 13) == "int32_t" and shift_kernels.acc_dtype(13, 16, 5, False) is np.int64


def test_weights_stay_packed_in_flash():
    """Flash holds the code stream itself: bits/8 bytes per weight (0.375 for 3 bits, float32 is 4)."""
    for bits in codes.BITS:
        node = ShiftLinear(name="l", inputs=("x", "w"), output="y", bits=bits, weight_shape=(10, 64))
        w = _codes(np.random.default_rng(bits), 640, bits, False)
        g = ir.Graph((("x", ir.TensorSpec((None, 64))),), (node,), ("y",), {"w": w}).validate()
        assert emit_c(g).weight_bytes == w.nbytes == 640 * bits // 8


# ---- the shift digits CNN (tools/models/shift_digits.py) --------------------------------------------

@pytest.fixture(scope="module")
def digits() -> ir.Graph:
    """The reference model (3-bit, zero-free), calibrated, optimized and path-selected as compile.py does."""
    import torch

    from edgert.compilers.compile import import_model, optimize
    from edgert.compilers.passes.select_shift_path import select_shift_path
    from tools.models.shift_digits import ShiftDigitsCNN, calibrated

    torch.manual_seed(0)
    model = calibrated(ShiftDigitsCNN(bits=3), (1, 8, 8))
    return select_shift_path(optimize(import_model(model, np.zeros((1, 1, 8, 8), np.float32))), "int_mac")


@needs_cc
def test_shift_digits_model_is_bit_exact(digits, tmp_path):
    """The whole model, its float layers (batch norm, pools) from ops_float.py between the shift
    layers: each rounds as the reference does, so every shift layer sees the same fixed-point input."""
    try:
        emit_c(digits)
    except UnsupportedOpError as e:
        pytest.skip(str(e))
    assert [n.op for n in digits.nodes if n.family == "shift"] == ["shift_conv2d"] * 3 + ["shift_linear"]
    x = np.random.default_rng(3).random((8, 1, 8, 8), dtype=np.float32)
    got, = run_c(digits, {"input": x}, tmp_path, sanitize=False)  # the kernels are checked with them above
    want, = reference(digits, {"input": x})
    np.testing.assert_array_equal(got, want)


@needs_board
@pytest.mark.slow
def test_shift_digits_firmware_is_6x_smaller_than_its_float_twin(digits, tmp_path):
    """The issue's bar, on the linked Cortex-M7 image (code, weights and all): 3-bit codes in flash."""
    import torch

    from edgert.compilers.backends.c.firmware import build_firmware
    from edgert.compilers.compile import import_model, optimize
    from edgert.targets import load_target
    from tools.models.digits_cnn import DigitsCNN

    try:
        models = [emit_c(digits)]
        torch.manual_seed(0)
        twin = optimize(import_model(DigitsCNN().eval(), np.zeros((1, 1, 8, 8), np.float32)))
        models.append(emit_c(twin))
    except UnsupportedOpError as e:
        pytest.skip(str(e))
    c = load_target("stm32h7").c
    shift, flt = (build_firmware(m.files, c, tmp_path / name, m.flags).footprint.flash_bytes
                  for m, name in zip(models, ("shift", "float")))
    assert shift * 6 <= flt, (shift, flt)
