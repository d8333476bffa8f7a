"""Shift layers on the CPU's int8 dot-product instructions, bit-exact with the shift reference.

A shift weight ±2^e with |2^e| <= 64 is an exact int8, and 8-bit fixed-point activations are int8, so
the integer sums can run on the instructions CPUs have for int8 products, which take an unsigned and
a signed operand: activations go in as x + 128 (uint8) and each output subtracts 128 * (its weights'
sum). The products are formed as a GEMM C[pixel, out] = A[pixel, k] . B[out, k] by a micro-kernel of
6 pixels x 16 outputs generated as LLVM IR with the x86 intrinsics (so the instructions are really
there; ``assembly`` shows them):

- ``avx512_vnni`` / ``avx_vnni``: ``vpdpbusd`` (4 uint8 x int8 products summed into each int32 lane).
- ``avx2``: ``vpmaddubsw`` (pairs into int16) then ``vpmaddwd`` by ones (pairs into int32). The int16
  sums are exact while they stay below 2^15: each is at most 2 * 255 * max|m|, so ``flush`` steps
  (8 for 3-bit weights) accumulate in int16 before widening, which is what makes it faster than fp32.

The variant is picked when the layer's weights are first decoded (at load), from the CPU's features:
one artifact serves an AVX2-only core and a VNNI one.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

import numba
import numpy as np
from llvmlite import ir
from numpy.lib.stride_tricks import as_strided

from edgert.ops import jit

VARIANTS = ("avx512_vnni", "avx_vnni", "avx2")  # best first
NEEDS = {"avx512_vnni": ("avx512f", "avx512vl", "avx512vnni"), "avx_vnni": ("avx2", "avxvnni"), "avx2": ("avx2",)}
FEATURES = {"avx512_vnni": "+avx2,+avx512f,+avx512vl,+avx512vnni", "avx_vnni": "+avx2,+avxvnni", "avx2": "+avx2"}
PIXELS, OUTS = 6, 16  # the micro-kernel's register block: 6 pixels x 16 outputs (two 8-lane int32 vectors)
MAX_MULTIPLIER = 64   # |m| <= 64: an int8, and a vpmaddubsw pair 2 * 255 * 64 < 2^15 does not saturate

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
V32I8, V16I16, V8I32 = ir.VectorType(I8, 32), ir.VectorType(I16, 16), ir.VectorType(I32, 8)
PTR = ir.PointerType()


@functools.cache
def cpu_features() -> frozenset[str]:
    """The host CPU's LLVM feature names that are present (read once per process)."""
    import llvmlite.binding as llvm
    return frozenset(f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+"))


def supported() -> list[str]:
    """The variants this CPU can run, best first (none off x86-64: the Numba paths run there)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    return [v for v in VARIANTS if all(f in cpu_features() for f in NEEDS[v])]


def host_variant() -> str | None:
    """$EDGERT_SHIFT_INT8 ("none" turns the path off, or a variant name), else the best supported."""
    env = os.environ.get("EDGERT_SHIFT_INT8")
    if env == "none":
        return None
    if env:
        check_runs(env)
        return env
    return (supported() or [None])[0]


def check_runs(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"shift int8 variant {variant!r} is unknown; choose one of {VARIANTS}")
    if variant not in supported():
        missing = [f for f in NEEDS[variant] if f not in cpu_features()]
        raise ValueError(f"shift int8 variant {variant!r} does not run on this CPU (it lacks {missing}); "
                         f"choose one of {supported() or ['none']}")


# ---- the micro-kernel as LLVM IR -------------------------------------------------------------------

def _loop(b: ir.IRBuilder, start, stop, step, body) -> None:
    """``for i in range(start, stop, step): body(i)`` in i64."""
    fn = b.function
    head, loop, done = fn.append_basic_block("head"), fn.append_basic_block("loop"), fn.append_basic_block("done")
    pre = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), loop, done)
    b.position_at_end(loop)
    body(i)
    i.add_incoming(b.add(i, step), b.block)
    b.branch(head)
    b.position_at_end(done)


def build_ir(variant: str) -> ir.Module:
    """``void shift_int8_gemm(u8* a, i8* b, i32* c, i64* params)``, params = (pixel blocks, output
    blocks, k4, flush, c row length). a: [pixels, 4 * k4] uint8; b: [out blocks][k4][16 outs][4] int8;
    c: [pixels][c row] int32, written (not accumulated)."""
    vnni = variant != "avx2"
    mod = ir.Module(name=f"shift_int8_{variant}")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR] * 4), "shift_int8_gemm")
    a, bw, c, params = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    p_blocks, o_blocks, k4, flush, c_row = (b.load(b.gep(params, [ir.Constant(I64, i)], source_etype=I64), typ=I64)
                                           for i in range(5))
    if vnni:
        dot = mod.declare_intrinsic("llvm.x86.avx512.vpdpbusd.256", fnty=ir.FunctionType(V8I32, [V8I32] * 3))
    else:
        maddubs = mod.declare_intrinsic("llvm.x86.avx2.pmadd.ub.sw", fnty=ir.FunctionType(V16I16, [V32I8] * 2))
        maddwd = mod.declare_intrinsic("llvm.x86.avx2.pmadd.wd", fnty=ir.FunctionType(V8I32, [V16I16] * 2))
    # accumulators as allocas: -O3 promotes them to registers
    acc32 = [[b.alloca(V8I32) for _ in range(2)] for _ in range(PIXELS)]
    acc16 = [[b.alloca(V16I16) for _ in range(2)] for _ in range(PIXELS)]
    zero32, zero16 = ir.Constant(V8I32, [0] * 8), ir.Constant(V16I16, [0] * 16)
    ones16 = ir.Constant(V16I16, [1] * 16)
    one, k4_bytes = ir.Constant(I64, 1), b.mul(k4, ir.Constant(I64, 4))

    def broadcast(pixel_row, k):
        """The 4 activation bytes at (pixel, k4 step k), repeated in all 8 int32 lanes."""
        word = b.load(b.gep(a, [b.add(pixel_row, b.mul(k, ir.Constant(I64, 4)))], source_etype=I8), typ=I32, align=1)
        vec = b.insert_element(ir.Constant(V8I32, ir.Undefined), word, ir.Constant(I32, 0))
        return b.shuffle_vector(vec, ir.Constant(V8I32, ir.Undefined), ir.Constant(V8I32, [0] * 8))

    def weights(ob, k):
        base = b.mul(b.add(b.mul(ob, k4), k), ir.Constant(I64, 64))
        return [b.load(b.gep(bw, [b.add(base, ir.Constant(I64, 32 * j))], source_etype=I8), typ=V32I8, align=1)
                for j in range(2)]

    def block(pb, ob):
        rows = [b.mul(b.add(b.mul(pb, ir.Constant(I64, PIXELS)), ir.Constant(I64, i)), k4_bytes)
                for i in range(PIXELS)]
        for i in range(PIXELS):
            for j in range(2):
                b.store(zero32, acc32[i][j])

        def step_vnni(k):
            w = [b.bitcast(v, V8I32) for v in weights(ob, k)]
            for i in range(PIXELS):
                x = broadcast(rows[i], k)
                for j in range(2):
                    b.store(b.call(dot, [b.load(acc32[i][j]), x, w[j]]), acc32[i][j])

        def step_avx2(k):
            w = weights(ob, k)
            for i in range(PIXELS):
                x = b.bitcast(broadcast(rows[i], k), V32I8)
                for j in range(2):
                    b.store(b.add(b.load(acc16[i][j]), b.call(maddubs, [x, w[j]])), acc16[i][j])

        def chunk(kc):
            for i in range(PIXELS):
                for j in range(2):
                    b.store(zero16, acc16[i][j])
            end = b.add(kc, flush)
            end = b.select(b.icmp_signed("<", end, k4), end, k4)
            _loop(b, kc, end, one, step_avx2)
            for i in range(PIXELS):
                for j in range(2):
                    b.store(b.add(b.load(acc32[i][j]), b.call(maddwd, [b.load(acc16[i][j]), ones16])), acc32[i][j])

        if vnni:
            _loop(b, ir.Constant(I64, 0), k4, one, step_vnni)
        else:
            _loop(b, ir.Constant(I64, 0), k4, flush, chunk)
        for i in range(PIXELS):
            pixel = b.add(b.mul(pb, ir.Constant(I64, PIXELS)), ir.Constant(I64, i))
            for j in range(2):
                at = b.add(b.mul(pixel, c_row), b.add(b.mul(ob, ir.Constant(I64, OUTS)), ir.Constant(I64, 8 * j)))
                b.store(b.load(acc32[i][j]), b.gep(c, [at], source_etype=I32), align=4)

    # output blocks outermost: one block's weights (64 * k4 bytes) stay in L1/L2 across all pixels
    _loop(b, ir.Constant(I64, 0), o_blocks, one,
          lambda ob: _loop(b, ir.Constant(I64, 0), p_blocks, one, lambda pb: block(pb, ob)))
    b.ret_void()
    return mod


def assembly(variant: str, cpu: str | None = None) -> str:
    """The kernel's x86 assembly; ``cpu`` (an LLVM CPU name) compiles for a CPU other than this one."""
    tm = jit.target_machine(FEATURES[variant], cpu)
    return tm.emit_assembly(jit.optimize(build_ir(variant), tm))


class _Kernel:
    def __init__(self, variant: str):
        llvm = jit.binding()
        tm = jit.target_machine(FEATURES[variant])
        self._engine = llvm.create_mcjit_compiler(jit.optimize(build_ir(variant), tm), tm)
        self._engine.finalize_object()
        addr = self._engine.get_function_address("shift_int8_gemm")
        self._fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4)(addr)

    def __call__(self, a: np.ndarray, bw: np.ndarray, c: np.ndarray, params: np.ndarray) -> None:
        self._fn(a.ctypes.data, bw.ctypes.data, c.ctypes.data, params.ctypes.data)


@functools.cache
def kernel(variant: str) -> _Kernel:
    """The variant's micro-kernel, compiled on first use (raises if this CPU cannot run it)."""
    check_runs(variant)
    return _Kernel(variant)


# ---- weights at load, activations per call ---------------------------------------------------------

class Int8Weights:
    """Integer multipliers m [O, K] laid out for the kernel, with what the +128 correction needs."""

    def __init__(self, m: np.ndarray, variant: str):
        self.variant = variant
        self.o, self.k = m.shape
        self.k4 = -(-self.k // 4)
        self.o_blocks = -(-self.o // OUTS)
        padded = np.zeros((self.o_blocks * OUTS, self.k4 * 4), np.int8)
        padded[:self.o, :self.k] = m
        self.packed = np.ascontiguousarray(padded.reshape(self.o_blocks, OUTS, self.k4, 4).transpose(0, 2, 1, 3))
        self.correction = 128 * m.astype(np.int64).sum(axis=1).astype(np.int32)  # 128 * sum_k m[o, k]
        top = max(int(np.abs(m).max()), 1)
        self.flush = max(1, (2 ** 15 - 1) // (2 * 255 * top))  # int16 steps that cannot overflow

    def gemm(self, a: np.ndarray, pixels: int) -> np.ndarray:
        """int32 sums [pixels, O] of a: uint8 [pixel blocks * PIXELS, 4 * k4] (activations + 128)."""
        c = np.empty((a.shape[0], self.o_blocks * OUTS), np.int32)
        params = np.array([a.shape[0] // PIXELS, self.o_blocks, self.k4, self.flush, c.shape[1]], np.int64)
        kernel(self.variant)(a, self.packed, c, params)
        return c[:pixels, :self.o] - self.correction


def eligible(m: np.ndarray, act_bits: int) -> bool:
    """The int8 path is exact here: int8 activations, |m| <= 64, and int32 sums of the shifted inputs."""
    top = int(np.abs(m).max()) if m.size else 0
    k = int(np.prod(m.shape[1:]))
    return act_bits <= 8 and top <= MAX_MULTIPLIER and k * 255 * max(top, 1) < 2 ** 31


def activation_rows(pixels: int, k4: int) -> np.ndarray:
    """The kernel's uint8 activation matrix for ``pixels`` rows, padded to whole blocks (zeros)."""
    return np.zeros((-(-pixels // PIXELS) * PIXELS, 4 * k4), np.uint8)


@numba.njit(cache=True, nogil=True)
def quantize_nhwc_u8(x, scale, lim, padding, out):
    """out[n, y + top, x + left, c] = clamp(round_half_even(x[n, c, y, x] * scale), -lim, lim - 1) + 128,
    the shift layer's fixed-point input (kernels.quantize) shifted to uint8, channels innermost; the
    border (zero padding) holds 0 + 128. ``scale`` is float32 2^frac_bits, as in kernels.quantize."""
    top, left = padding[0], padding[1]
    out[:] = 128
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for y in range(x.shape[2]):
                for xx in range(x.shape[3]):
                    q = min(max(np.rint(x[b, c, y, xx] * scale), -lim), lim - 1)
                    out[b, y + top, xx + left, c] = np.uint8(np.int32(q) + 128)
    return out


def im2col_u8(xu: np.ndarray, kh: int, kw: int, stride, dilation, out_hw, a: np.ndarray) -> np.ndarray:
    """a[(n, y, x), (ky, kx, c)] = xu[n, window, c], as one strided NumPy copy (runs of C bytes)."""
    n, c = xu.shape[0], xu.shape[3]
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    s0, s1, s2, s3 = xu.strides
    win = as_strided(xu, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)
    row = a.strides[0]
    dst = as_strided(a, (n, oh, ow, kh, kw, c), (oh * ow * row, ow * row, row, kw * c, c, 1))
    dst[...] = win
    return a


def conv_weights(m: np.ndarray, variant: str) -> Int8Weights:
    """Conv multipliers [O, C, kh, kw] (groups = 1) in the im2col order (ky, kx, c)."""
    return Int8Weights(m.transpose(0, 2, 3, 1).reshape(m.shape[0], -1), variant)


def conv2d(x: np.ndarray, w: Int8Weights, act_bits: int, frac_bits: int, kernel_hw, stride, padding, dilation,
           out_hw) -> np.ndarray:
    """int32 conv sums [N, O, oh, ow] (groups = 1) of float input x, quantized as the shift layer does."""
    n, c, h, wd = x.shape
    t, l, b, r = padding
    xu = np.empty((n, h + t + b, wd + l + r, c), np.uint8)
    quantize_nhwc_u8(np.ascontiguousarray(x, np.float32), np.float32(2.0 ** frac_bits), 2 ** (act_bits - 1),
                     (t, l), xu)
    pixels = n * out_hw[0] * out_hw[1]
    a = im2col_u8(xu, kernel_hw[0], kernel_hw[1], stride, dilation, out_hw, activation_rows(pixels, w.k4))
    c_sums = w.gemm(a, pixels)
    return np.ascontiguousarray(c_sums.reshape(n, out_hw[0], out_hw[1], w.o).transpose(0, 3, 1, 2))


def linear(xq: np.ndarray, w: Int8Weights) -> np.ndarray:
    """int32 sums [rows, O] of fixed-point rows xq [rows, K] (int8 range)."""
    a = activation_rows(xq.shape[0], w.k4)
    a[:xq.shape[0], :w.k] = (xq + 128).astype(np.uint8)
    return w.gemm(a, xq.shape[0])
