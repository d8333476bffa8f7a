"""Every binary conv kernel variant (isa.py) this CPU runs, forced in turn, vs the NumPy reference."""

import platform

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert.ops.binary import bits, conv, isa, lanes, simd
from tests.ops.binary.test_kernels import CONV_CASES

CASES = CONV_CASES + [  # C, O, H, W, k, stride, padding, pad_mode, groups
    (256, 20, 6, 7, 3, 1, (1, 1, 1, 1), "one", 1),  # whole 256-bit records
    (1024, 9, 4, 5, 3, 1, (1, 1, 1, 1), "zero", 1),  # 36 words per output: byte counters folded per kernel row
    (256, 70, 9, 8, 3, 2, (1, 1, 1, 1), "one", 1),  # stride 2, a part-filled last channel block
    (512, 16, 5, 5, 3, 1, (1, 1, 1, 1), "zero", 2),  # groups of whole records
    (256, 16, 6, 6, 3, 1, (1, 1, 1, 1), "zero", 1),  # even width: the 2-pixel block
    (1, 3, 5, 5, 3, 1, (1, 1, 1, 1), "zero", 1),
    (1024, 20, 3, 4, 3, 1, (1, 1, 1, 1), "one", 1),  # 144 words: avx512 loops over kernel rows, bits fused
    (96, 24, 5, 9, 3, 1, (1, 1, 1, 1), "one", 3),  # avx512: groups of one 8-channel vector
]


@pytest.fixture(params=isa.VARIANTS)
def variant(request):
    if request.param not in isa.supported():
        pytest.skip(f"this CPU cannot run the {request.param} variant (needs {isa.NEEDS[request.param]})")
    isa.force(request.param)
    yield request.param
    isa.force(None)


@pytest.mark.parametrize("c,o,h,w,k,stride,padding,pad_mode,groups", CASES)
def test_variant_matches_reference(variant, c, o, h, w, k, stride, padding, pad_mode, groups):
    rng = np.random.default_rng(c * 7 + o)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    xb, wb = bits.bitpack(x, groups), bits.pack_conv_weight(wt)
    args = (xb, wb, c, (stride, stride), padding, pad_mode, groups)
    dot = conv.binary_conv_dot_ref(*args)
    scale, bias = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    assert_array_equal(conv.binary_conv2d(*args, "float", scale, bias), conv.epilogue_ref(dot, "float", scale, bias))
    kk = k * k * c // groups
    thr = rng.integers(-kk, kk, o).astype(np.int32)
    thr[:2] = [-kk - 1, kk + 1]  # always off, always on
    flip = rng.integers(0, 2, o).astype(np.uint8)
    for out_groups in (1, o) if o in (3, 9) else (1,):
        assert_array_equal(conv.binary_conv2d(*args, "bits", thr, flip, out_groups),
                           conv.epilogue_ref(dot, "bits", thr, flip, out_groups))


@pytest.mark.parametrize("k,o", [(1, 1), (63, 5), (64, 64), (1001, 70), (512, 24)])
def test_dense_variant_matches_reference(variant, k, o, monkeypatch):
    monkeypatch.setattr(conv, "LANES_DENSE_WORDS", 0)  # the AVX-512 kernel on every size
    rng = np.random.default_rng(k + o)
    x, w = rng.standard_normal((3, k)).astype(np.float32), rng.standard_normal((o, k)).astype(np.float32)
    xb, wb = bits.bitpack(x), bits.pack_dense_weight(w)
    dot = conv.binary_dense_dot_ref(xb, wb, k)
    scale, bias = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    assert_array_equal(conv.binary_dense(xb, wb, k, "float", scale, bias), conv.epilogue_ref(dot, "float", scale, bias))
    thr, flip = rng.integers(-k, k + 1, o).astype(np.int32), rng.integers(0, 2, o).astype(np.uint8)
    assert_array_equal(conv.binary_dense(xb, wb, k, "bits", thr, flip), conv.epilogue_ref(dot, "bits", thr, flip))


def test_simd_kernels_take_their_convs():
    assert simd.supports("avx2", (256, 3, 3, 4), 1) and simd.supports("avx2", (512, 3, 3, 8), 1)
    assert not simd.supports("avx2", (64, 3, 3, 1), 1)  # part-filled records: the generic kernels
    assert not simd.supports("generic", (256, 3, 3, 4), 1)
    assert not simd.supports("avx2", (16, 3, 3, 4), 4)  # groups of 4 output channels
    assert lanes.supports((64, 3, 3, 1), 1) and lanes.supports((24, 3, 3, 1), 3)  # any width; whole vectors
    assert not lanes.supports((16, 3, 3, 1), 4)


def test_lanes_block_keeps_weights_in_l1():
    assert lanes.block(7, 64, 72) == (7, 2)  # 7x7x512: 2 vectors x 72 words = 9 KB of weights
    assert lanes.block(16, 32, 36) == (4, 2)  # no recomputed pixel
    p, q = lanes.block(14, 128, 1000)
    assert q == 1 and 14 % p == 0


def test_choice_is_the_best_supported(monkeypatch):
    monkeypatch.delenv("EDGERT_BINARY_VARIANT", raising=False)
    assert isa.variant() == isa.supported()[0]
    assert isa.supported()[-1] == "generic"
    if platform.machine() == "x86_64" and "avx2" in isa.cpu_features():
        assert "avx2" in isa.supported()
    monkeypatch.setenv("EDGERT_BINARY_VARIANT", "generic")
    assert isa.variant() == "generic"
    isa.force(None)
    assert "generic" in isa.describe()
    with pytest.raises(ValueError, match="choose one of"):
        isa.force("neon-sve9")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 kernels")
def test_kernels_emit_the_isa_popcount():
    avx2 = simd.assembly("avx2", *simd.BLOCKS["avx2"][0], cpu="znver3")
    assert "vpshufb" in avx2 and "vpsadbw" in avx2 and "popcnt" not in avx2
    shape = dict(kh=3, kw=3, wpg=4, nw=4, sh=1, sw=1, wp=16, oh=14, ow=14, vectors=32, og=256, out_pix=32,
                 out_img=0, kt_row=256, classed=True)
    avx512 = lanes.assembly(shape, 7, 2, "bits", cpu="sapphirerapids")  # compiled, not run, on an AVX2 host
    assert "vpopcntq" in avx512 and "zmm" in avx512


def test_kernel_named_for_bench_and_profile(variant):
    name = conv.describe_kernel((256, 3, 3, 4), 256, 1, "bits", 14)
    if variant == "generic":
        assert name == "generic popcount"
        assert conv.describe_kernel((64, 3, 3, 1), 64, 1, "bits", 56) == "generic sliced"
    elif variant == "avx2":
        assert name == f"avx2 {simd.BLOCKS['avx2'][0][0]}x{simd.BLOCKS['avx2'][0][1]}"
        assert conv.describe_kernel((512, 3, 3, 8), 512, 1, "float", 7) == "avx2 1x8"  # odd width
    else:  # pixels x output channels
        assert name == "avx512 7x16"
        assert conv.describe_kernel((64, 3, 3, 1), 64, 1, "bits", 16) == "avx512 4x16"
    assert conv.describe_kernel((12, 3, 3, 1), 12, 12, "float", 5) == "generic channels"  # depthwise
    assert conv.describe_kernel((4, 3, 3, 2), 130, 2, "float", 5) == "generic per-group"  # 2 words per group
