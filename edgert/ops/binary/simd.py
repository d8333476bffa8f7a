"""Register-blocked AVX2 XOR-popcount conv micro-kernels generated as LLVM IR with x86 SIMD intrinsics.

Numba's vectorizer turns ``popcount(x ^ w)`` over 4 channels' words into a ``vpshufb`` popcount followed
by ``vpsadbw`` and a 64-bit add per word, with the accumulators in memory; these kernels keep P output
pixels x Q output channels of accumulators in registers and each loaded word is used P or Q times.

AVX2 has no vector popcount: the nibble-table method (Mula) with the nibbles split ahead of time.
Since ``(x ^ w) & 15 == (x & 15) ^ (w & 15)``, the input (once per call) and the weights (once per
weight array) are stored as a record of two 32-byte vectors, low nibbles and high nibbles, so a 256-bit
word costs 2 ``vpxor``, 2 ``vpshufb`` (the 16-entry table of bit counts) and 2 ``vpaddb`` into byte
counters, which ``vpsadbw`` folds into 64-bit sums every 31 words (a byte counter gains at most 8 per word).
AVX-512 VPOPCNTDQ has its own kernel, with the output channels across the lanes (lanes.py).

Each kernel writes the popcounts ``a`` (int32) of every (pixel, output channel); conv.py turns them into
``dot = K - 2a`` and the layer's epilogue. Compiled once per process for the host CPU (llvmlite MCJIT)
and called through ctypes with one pointer to its integer parameters (``PARAMS``).
"""

from __future__ import annotations

import ctypes
import functools

import numba
import numpy as np
from llvmlite import ir

from edgert.ops import jit

PARAMS = ("n", "oh", "ow", "o", "kh", "kw", "nv", "sh", "sw", "x_img", "x_row", "x_pix",
          "out_img", "out_row", "out_pix", "out_ch", "row_flush")
FLUSH_WORDS = 31  # byte counters (avx2) gain <= 8 per 256-bit word: 31 words stay below 256

I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)


WORDS = 4  # 64-bit words per record
RECORD = 64  # bytes per reduction step: a 256-bit word split into two 32-byte nibble vectors


def _loop(b: ir.IRBuilder, start, stop, step, body):
    """``for i in range(start, stop, step): body(i)`` (i64; stop > start not assumed)."""
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
    nxt = b.add(i, step)
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(done)


def build_ir(p: int, q: int) -> ir.Module:
    """IR of ``void binary_conv_counts(i8* x, i8* w, i32* out, i64* params)``.

    x: records [n, rows, cols, ...] addressed with the strides in params (in records); w: records
    [o, kh, kw, nv]; out[nn * out_img + oy * out_row + ox * out_pix + o * out_ch] = popcount sum (int32).
    """
    mod = ir.Module(name=f"binary_nibble_{p}x{q}")
    fnty = ir.FunctionType(ir.VoidType(), [I8.as_pointer(), I8.as_pointer(), I32.as_pointer(), I64.as_pointer()])
    fn = ir.Function(mod, fnty, name="binary_conv_counts")
    for a in fn.args:
        a.add_attribute("noalias")
    xa, wa, outa, pa = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    prm = {name: b.load(b.gep(pa, [ir.Constant(I64, i)]), name=name) for i, name in enumerate(PARAMS)}
    c = lambda v: ir.Constant(I64, v)  # noqa: E731
    v8 = ir.VectorType(I8, 32)
    v4 = ir.VectorType(I64, 4)
    pshufb = mod.declare_intrinsic("llvm.x86.avx2.pshuf.b", fnty=ir.FunctionType(v8, [v8, v8]))
    psadbw = mod.declare_intrinsic("llvm.x86.avx2.psad.bw", fnty=ir.FunctionType(v4, [v8, v8]))
    table = ir.Constant(v8, [bin(i).count("1") for i in range(16)] * 2)
    accs = [[b.alloca(v8) for _ in range(q)] for _ in range(p)]  # byte counters
    sums = [[b.alloca(v4) for _ in range(q)] for _ in range(p)]  # their 64-bit lane sums
    reduce_add = mod.declare_intrinsic("llvm.vector.reduce.add.v4i64", fnty=ir.FunctionType(I64, [v4]))

    def flush():
        for pi in range(p):
            for qi in range(q):
                s = b.call(psadbw, [b.load(accs[pi][qi]), ir.Constant(v8, None)])
                b.store(b.add(b.load(sums[pi][qi]), s), sums[pi][qi])
                b.store(ir.Constant(v8, None), accs[pi][qi])

    def four_totals(s):
        """Four channels' 64-bit lane sums (each below 2**16) -> their four int32 totals: the sums packed
        into 16-bit fields of one vector, so one pair of shuffles and adds reduces all four."""
        v16 = ir.VectorType(ir.IntType(16), 16)
        packed = s[0]
        for j in (1, 2, 3):
            packed = b.or_(packed, b.shl(s[j], ir.Constant(v4, [16 * j] * 4)))
        h = b.bitcast(packed, v16)
        h = b.add(b.shuffle_vector(h, h, ir.Constant(ir.VectorType(I32, 8), list(range(8)))),
                  b.shuffle_vector(h, h, ir.Constant(ir.VectorType(I32, 8), list(range(8, 16)))))
        h = b.add(b.shuffle_vector(h, h, ir.Constant(ir.VectorType(I32, 4), list(range(4)))),
                  b.shuffle_vector(h, h, ir.Constant(ir.VectorType(I32, 4), list(range(4, 8)))))
        return [b.zext(b.extract_element(h, c(j)), I32) for j in range(4)]

    def vec_at(base, index, offset, ty):
        ptr = b.gep(base, [b.add(b.mul(index, c(RECORD)), c(offset))])
        return b.load(b.bitcast(ptr, ty.as_pointer()), align=8)  # NumPy aligns to 16 bytes, not 32

    def block(nn, o0, oy, ox0):
        for row in accs + sums:
            for a in row:
                b.store(ir.Constant(a.type.pointee, None), a)
        last = b.sub(prm["ow"], c(1))
        cols = []
        for pi in range(p):
            ox = b.add(ox0, c(pi))
            cols.append(b.select(b.icmp_signed("<", ox, last), ox, last))  # past the row's end: recompute the last

        def tap_row(ky):
            iy = b.add(b.mul(oy, prm["sh"]), ky)
            row0 = b.add(b.mul(nn, prm["x_img"]), b.mul(iy, prm["x_row"]))

            def tap(kx):
                xs = [b.add(row0, b.mul(b.add(b.mul(col, prm["sw"]), kx), prm["x_pix"])) for col in cols]
                ws = [b.mul(b.add(b.mul(b.add(b.mul(b.add(o0, c(qi)), prm["kh"]), ky), prm["kw"]), kx), prm["nv"])
                      for qi in range(q)]

                def word(v):
                    xl = [vec_at(xa, b.add(xi, v), 0, v8) for xi in xs]
                    xh = [vec_at(xa, b.add(xi, v), 32, v8) for xi in xs]
                    for qi in range(q):
                        wl, wh = vec_at(wa, b.add(ws[qi], v), 0, v8), vec_at(wa, b.add(ws[qi], v), 32, v8)
                        for pi in range(p):
                            lo = b.call(pshufb, [table, b.xor(xl[pi], wl)])
                            hi = b.call(pshufb, [table, b.xor(xh[pi], wh)])
                            a = accs[pi][qi]
                            b.store(b.add(b.add(b.load(a), lo), hi), a)
                _loop(b, c(0), prm["nv"], c(1), word)
            _loop(b, c(0), prm["kw"], c(1), tap)
            with b.if_then(b.icmp_signed("!=", prm["row_flush"], c(0))):  # K over 31 words: fold the byte
                flush()                                                  # counters after each kernel row
        _loop(b, c(0), prm["kh"], c(1), tap_row)
        flush()
        out0 = b.add(b.mul(nn, prm["out_img"]), b.mul(oy, prm["out_row"]))
        for pi in range(p):
            ox = b.add(ox0, c(pi))
            with b.if_then(b.icmp_signed("<", ox, prm["ow"])):
                base = b.add(out0, b.mul(ox, prm["out_pix"]))
                totals = []
                for q0 in range(0, q, 4):
                    if q0 + 4 <= q:
                        totals += four_totals([b.load(sums[pi][q0 + j]) for j in range(4)])
                    else:
                        totals += [b.trunc(b.call(reduce_add, [b.load(sums[pi][qi])]), I32)
                                   for qi in range(q0, min(q0 + 4, q))]
                for qi, total in enumerate(totals):
                    b.store(total, b.gep(outa, [b.add(base, b.mul(b.add(o0, c(qi)), prm["out_ch"]))]))

    _loop(b, c(0), prm["n"], c(1), lambda nn: _loop(
        b, c(0), prm["o"], c(q), lambda o0: _loop(
            b, c(0), prm["oh"], c(1), lambda oy: _loop(
                b, c(0), prm["ow"], c(p), lambda ox0: block(nn, o0, oy, ox0)))))
    b.ret_void()
    return mod


# ---- compiling ----

FEATURES = {"avx2": "+avx2,+ssse3,+popcnt"}


def assembly(variant: str, p: int, q: int, cpu: str | None = None) -> str:
    """The kernel's x86 assembly (tests check the instructions; ``cpu`` compiles for a CPU not this one)."""
    tm = jit.target_machine(FEATURES[variant], cpu)
    return tm.emit_assembly(jit.optimize(build_ir(p, q), tm, vector_code=True))


class Kernel:
    """One compiled micro-kernel: ``kernel(x, w, out, **params)`` with uint8/uint64 record arrays."""

    def __init__(self, variant: str, p: int, q: int):
        llvm = jit.binding()
        self.variant, self.p, self.q = variant, p, q
        tm = jit.target_machine(FEATURES[variant])
        self._engine = llvm.create_mcjit_compiler(jit.optimize(build_ir(p, q), tm, vector_code=True), tm)
        self._engine.finalize_object()
        addr = self._engine.get_function_address("binary_conv_counts")
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(addr)

    def call(self, x: int, w: int, out: int, params: np.ndarray) -> None:
        """x, w: addresses of record arrays; out: of int32 counts; params: int64 in PARAMS order. The caller
        keeps the arrays alive and the strides inside them."""
        self._fn(x, w, out, params.ctypes.data)


VARIANTS = ("avx2",)
# Output pixels x output channels per register block, the first preferred: a row of odd width takes the
# one-pixel block (7x7x512 measured 1.2x faster at 1 x 8 than at 2 x 4; 14x14x256 1.1x slower).
BLOCKS = {"avx2": [(2, 4), (1, 8)]}  # 16 ymm registers


def block(variant: str, ow: int) -> tuple[int, int]:
    """The register block a row of ``ow`` outputs takes: the fewest recomputed pixels, the first on ties."""
    return min(BLOCKS[variant], key=lambda pq: -(-ow // pq[0]) * pq[0])


@functools.cache
def kernel(variant: str, p: int, q: int) -> Kernel:
    """The variant's conv micro-kernel for p x q blocks, compiled on first use."""
    return Kernel(variant, p, q)


# ---- layouts: packed uint64 words -> the kernels' records ----

@numba.njit(cache=True, nogil=True, boundscheck=False)
def _split_nibbles(by, out):
    """Bytes -> records: each 32 bytes become their 32 low nibbles then their 32 high nibbles (one
    vectorized pass; NumPy's & / >> / concatenate took 5x longer at 14x14x256)."""
    for r in range(by.size // 32):
        src, dst = by[r * 32: r * 32 + 32], out[r * 64: r * 64 + 64]
        for i in range(32):
            dst[i] = src[i] & 15
            dst[32 + i] = src[i] >> 4


def _records(words: np.ndarray) -> np.ndarray:
    """uint64 [..., m * 4] -> records uint8 [..., m, 64]."""
    out = np.empty((*words.shape[:-1], words.shape[-1] // WORDS, RECORD), np.uint8)
    _split_nibbles(np.ascontiguousarray(words).reshape(-1).view(np.uint8), out.reshape(-1))
    return out


def supports(variant: str, w_shape, groups: int) -> bool:
    """Whether the variant's kernel takes this conv: avx2; a group's channels fill whole records
    (multiples of 256: below that, part-filled records or kernel rows gathered into records measured slower
    than the generic kernels at 56x56x64 and 28x28x128); groups 1 or of 8 or more output channels; a kernel
    row the byte counters hold and per-lane sums below 2**16."""
    if variant not in VARIANTS:
        return False
    o, kh, kw, wpg = w_shape
    if wpg % WORDS or (groups > 1 and o // groups < 8):
        return False
    return kw * wpg // WORDS <= FLUSH_WORDS and kh * kw * wpg * 16 < 2 ** 16


class Prepared:
    """A conv's weights as records, made once per weight array (:func:`supports` says which convs)."""

    def __init__(self, variant: str, w: np.ndarray, groups: int):
        o, kh, kw, wpg = w.shape
        self.variant, self.groups, self.kernel_shape = variant, groups, (kh, kw)
        self.kernels = [kernel(variant, p, q) for p, q in BLOCKS[variant]]
        q = max(k.q for k in self.kernels)
        og = o // groups
        self.og, self.og_pad = og, -(-og // q) * q
        self.nv = wpg // WORDS
        ww = np.zeros((groups, self.og_pad, kh, kw, wpg), np.uint64)
        ww[:, :og] = w.reshape(groups, og, kh, kw, wpg)
        self.records = _records(ww)

    def input_records(self, xp: np.ndarray) -> np.ndarray:
        """Padded packed input [N, Hp, Wp, words] -> records [N, Hp, Wp, groups * nv, record bytes]."""
        return _records(xp)

    def counts(self, xp: np.ndarray, stride, oh: int, ow: int, channels_first: bool = False) -> np.ndarray:
        """Popcounts of x ^ w summed per output: int32 [N, oh, ow, O], or [N, O, oh, ow] when
        ``channels_first`` (the float output's layout); xp is the caller's padded input."""
        xr = self.input_records(xp)
        n, hp, cols, nrec, rb = xr.shape
        kh, kw = self.kernel_shape
        g, ogp = self.groups, self.og_pad
        out = np.empty((n, g * ogp, oh, ow) if channels_first else (n, oh, ow, g * ogp), np.int32)
        pix, ch = (1, oh * ow) if channels_first else (g * ogp, 1)
        reduction = kh * kw * self.nv
        params = np.array([n, oh, ow, ogp, kh, kw, self.nv, stride[0], stride[1], hp * cols * nrec, cols * nrec, nrec,
                           oh * ow * g * ogp, ow * pix, pix, ch, int(reduction > FLUSH_WORDS)], np.int64)
        wg = self.records.reshape(g, -1)
        p, q = block(self.variant, ow)
        kern = next(k for k in self.kernels if (k.p, k.q) == (p, q))
        for gi in range(g):
            kern.call(xr.ctypes.data + gi * self.nv * rb, wg[gi].ctypes.data,
                             out.ctypes.data + gi * ogp * ch * 4, params)
        if ogp != self.og and channels_first:
            out = np.ascontiguousarray(out.reshape(n, g, ogp, oh, ow)[:, :, :self.og]).reshape(n, -1, oh, ow)
        elif ogp != self.og:
            out = np.ascontiguousarray(out.reshape(n, oh, ow, g, ogp)[..., :self.og]).reshape(n, oh, ow, -1)
        return out


def stream_peak(variant: str, p: int, q: int, rows: int = 4, reps: int = 200):
    """A streaming XOR-popcount micro-benchmark of the variant's kernel: p input streams x q weight streams
    of ``rows`` x 15 words each (L1-resident: 22.5 KB at avx2's 2 x 4; 15, not 16, so the streams are not
    4 KB apart and alias in L1), every pair counted, ``reps`` times, with no conv addressing around it.
    Returns (call, binary MACs per call)."""
    k = Kernel(variant, p, q)
    nv = 15  # byte counters folded every 15 words, as after a conv's kernel row
    records = rows * nv
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (p, records, RECORD), dtype=np.uint8)  # records hold nibbles
    w = rng.integers(0, 16, (q, records, RECORD), dtype=np.uint8)
    out = np.empty(p * q, np.int32)
    params = np.array([reps, 1, p, q, rows, 1, nv, 1, 1, 0, nv, records, 0, 0, q, 1, 1], np.int64)
    return (lambda: k.call(x.ctypes.data, w.ctypes.data, out.ctypes.data, params)), reps * p * q * records * 64 * WORDS
