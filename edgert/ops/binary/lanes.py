"""AVX-512 VPOPCNTDQ binary conv with the output channels across the 8 lanes of a zmm register.

The weights are stored channel-innermost, [O/8, kh, kw, words, 8]: one 512-bit load holds the same input
word of 8 output channels. The input word is broadcast to all 8 lanes, so one ``vpxorq``, ``vpopcntq``
and ``vpaddq`` count 8 channels at once. Each lane's accumulator is then one output's total, and no
horizontal sums are needed (simd.py's record kernels sum lanes per output). P pixels x Q channel vectors
of accumulators stay in registers, so each weight vector is used P times and each broadcast Q times.

The kernel is generated per layer shape. kh, kw, the words, the strides and the row widths are constants,
and the reduction is unrolled, so the addressing folds into immediate offsets. It is compiled once per
process per shape. The epilogue is fused: for packed bits the threshold compare of 8 channels writes one
byte of the output, for float output the scale and bias are applied in the kernel; otherwise (grouped
output bits) it stores int32 counts for conv.py's epilogues. Zero padding is fused too: each output pixel
reads its class's row of limits (bits) or of k (float), which hold the correction (padding.py).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from llvmlite import ir

from edgert.ops import jit
from edgert.ops.binary import simd

LANES = 8
UNROLL = 96  # reduction words unrolled in one block; longer reductions loop over kernel rows
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
V = ir.VectorType(I64, LANES)
# Pixels x channel vectors per register block, the first preferred (at most 18 accumulators of 32 zmm).
# On Zen 4, 7x2 and 4x2 were within 5% of the best block at each of LCE's four layers and 4x4 5-10% slower;
# what mattered most was the weights of a block staying in L1.
BLOCKS = [(7, 2), (4, 2), (2, 4), (6, 3), (5, 3), (3, 4), (3, 2), (2, 2), (1, 4), (1, 2), (1, 1)]
L1_WEIGHTS = 16384  # bytes of one block's weights (q vectors x the reduction): 7x7x512 at q = 8 (37 KB) ran 2x slower


def block(ow: int, vectors: int, words: int) -> tuple[int, int]:
    """The register block for rows of ``ow`` pixels, ``vectors`` channel vectors and ``words`` words of
    reduction: the least work (recomputed pixels, padded vectors) among the blocks whose weights fit
    L1_WEIGHTS (else the one-vector blocks), then the first listed."""
    fits = [pq for pq in BLOCKS if pq[1] * words * LANES * 8 <= L1_WEIGHTS] or [pq for pq in BLOCKS if pq[1] == 1]
    return min(fits, key=lambda pq: (-(-ow // pq[0]) * pq[0]) * (-(-vectors // pq[1]) * pq[1]))


def build_ir(shape: dict, p: int, q: int, mode: str) -> ir.Module:
    """IR of ``void binary_lanes_conv(i64* x, i64* w, i8* out, i8* p0, i8* p1, i32* cls, i64* kt, i64 n,
    i64 x_img)``.

    shape: kh, kw, wpg (one group's words), nw (words per input pixel), sh, sw, wp (padded width), oh, ow,
    vectors (one group's channel vectors), og (its real channels), out_pix (bytes of bits, or int32
    counts, per output pixel), out_img (floats per output image), kt_row (int64 per row of kt: the
    channels of all groups, padded), classed (pixels have classes: zero padding).
    x: one group's words of the padded packed input [n, hp, wp, nw], images x_img words apart (0 in the
    streaming peak: the same image n times); w: [vectors, kh, kw, wpg, 8]; cls: each output pixel's class
    [oh * ow], read when classed (else every pixel is class 0); kt: a row per class, this group's part
    from kt on. mode "bits": out is packed bits as bytes, bit (2 * count > kt[c, o]) ^ p1[o] (limits
    k - corr - threshold, flip bits); "float": out is float32 NCHW (kt[c, o] - 2 * count) * p0[o] + p1[o]
    (k - corr; float32 scale and bias); "counts": int32 counts, channels innermost.
    """
    kh, kw, wpg, nw, sh, sw = (shape[k] for k in ("kh", "kw", "wpg", "nw", "sh", "sw"))
    oh, ow, vecs, out_pix = shape["oh"], shape["ow"], shape["vectors"], shape["out_pix"]
    x_row = shape["wp"] * nw
    f32 = ir.FloatType()
    vf = ir.VectorType(f32, LANES)

    mod = ir.Module(name=f"binary_lanes_{p}x{q}")
    fnty = ir.FunctionType(ir.VoidType(), [I64.as_pointer(), I64.as_pointer(), I8.as_pointer(), I8.as_pointer(),
                                           I8.as_pointer(), I32.as_pointer(), I64.as_pointer(), I64, I64])
    fn = ir.Function(mod, fnty, name="binary_lanes_conv")
    for a in fn.args[:7]:
        a.add_attribute("noalias")
    xa, wa, outa, p0a, p1a, clsa, kta, n, x_img = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    c = lambda v: ir.Constant(I64, v)  # noqa: E731
    ctpop = mod.declare_intrinsic("llvm.ctpop.v8i64", fnty=ir.FunctionType(V, [V]))
    zero = ir.Constant(V, None)

    def blk(nn, og, oy, ox0):
        cols = [b.select(b.icmp_signed("<", b.add(ox0, c(pi)), c(ow - 1)), b.add(ox0, c(pi)), c(ow - 1))
                for pi in range(p)]  # past the row's end: recompute the last pixel, do not store it
        x0 = [b.add(b.add(b.mul(nn, x_img), b.mul(oy, c(sh * x_row))), b.mul(col, c(sw * nw))) for col in cols]
        w0 = b.mul(og, c(q * kh * kw * wpg * LANES))
        accs = [[zero] * q for _ in range(p)]

        def words(accs, ky_off, ky_w, ks):
            """Add the words of kernel taps ks (kx, v pairs) on one kernel row (offsets given as IR values)."""
            for kx, v in ks:
                ws = [b.load(b.bitcast(b.gep(wa, [b.add(b.add(w0, ky_w), c((qi * kh * kw * wpg + kx * wpg + v) * LANES))]),
                                       V.as_pointer()), align=8) for qi in range(q)]
                for pi in range(p):
                    xw = b.load(b.gep(xa, [b.add(b.add(x0[pi], ky_off), c(kx * nw + v))]))
                    xv = b.shuffle_vector(b.insert_element(ir.Constant(V, ir.Undefined), xw, c(0)),
                                          ir.Constant(V, ir.Undefined), ir.Constant(ir.VectorType(I32, LANES), [0] * LANES))
                    for qi in range(q):
                        accs[pi][qi] = b.add(accs[pi][qi], b.call(ctpop, [b.xor(xv, ws[qi])]))
            return accs

        taps = [(kx, v) for kx in range(kw) for v in range(wpg)]
        if kh * len(taps) <= UNROLL:
            for ky in range(kh):
                accs = words(accs, c(ky * x_row), c(ky * kw * wpg * LANES), taps)
        else:  # one unrolled kernel row per iteration, the accumulators carried in phis
            pre = b.block
            head, body, done = (fn.append_basic_block(s) for s in ("ky_head", "ky_body", "ky_done"))
            b.branch(head)
            b.position_at_end(head)
            ky = b.phi(I64)
            ky.add_incoming(c(0), pre)
            phis = [[b.phi(V) for _ in range(q)] for _ in range(p)]
            for pi in range(p):
                for qi in range(q):
                    phis[pi][qi].add_incoming(zero, pre)
            b.cbranch(b.icmp_signed("<", ky, c(kh)), body, done)
            b.position_at_end(body)
            new = words([row[:] for row in phis], b.mul(ky, c(x_row)), b.mul(ky, c(kw * wpg * LANES)), taps)
            for pi in range(p):
                for qi in range(q):
                    phis[pi][qi].add_incoming(new[pi][qi], b.block)
            ky.add_incoming(b.add(ky, c(1)), b.block)
            b.branch(head)
            b.position_at_end(done)
            accs = phis

        for pi in range(p):
            ox = b.add(ox0, c(pi))
            with b.if_then(b.icmp_signed("<", ox, c(ow))):
                pix = b.add(b.mul(b.add(b.mul(nn, c(oh)), oy), c(ow)), ox)
                kt_at = c(0)  # the row of the pixel's class (one class without zero padding: no load)
                if shape["classed"]:
                    kt_at = b.mul(b.sext(b.load(b.gep(clsa, [b.add(b.mul(oy, c(ow)), ox)])), I64),
                                  c(shape["kt_row"] // LANES))
                for qi in range(q):
                    vec = b.add(b.mul(og, c(q)), c(qi))
                    with b.if_then(b.icmp_signed("<", vec, c(vecs))):
                        if mode == "bits":
                            lim = b.load(b.gep(b.bitcast(kta, V.as_pointer()), [b.add(kt_at, vec)]), align=8)
                            flip = b.bitcast(b.load(b.gep(p1a, [vec])), ir.VectorType(I1, LANES))
                            hit = b.xor(b.icmp_signed(">", b.shl(accs[pi][qi], ir.Constant(V, [1] * LANES)), lim), flip)
                            b.store(b.bitcast(hit, I8), b.gep(outa, [b.add(b.mul(pix, c(out_pix)), vec)]))
                        elif mode == "float":  # in float32 as the reference: exact k - 2a, then * scale, + bias
                            scale = b.load(b.gep(b.bitcast(p0a, vf.as_pointer()), [vec]), align=4)
                            bias = b.load(b.gep(b.bitcast(p1a, vf.as_pointer()), [vec]), align=4)
                            kv = b.load(b.gep(b.bitcast(kta, V.as_pointer()), [b.add(kt_at, vec)]), align=8)
                            dot = b.sitofp(b.sub(kv, b.shl(accs[pi][qi], ir.Constant(V, [1] * LANES))), vf)
                            y = b.fadd(b.fmul(dot, scale), bias)
                            ya = b.bitcast(outa, f32.as_pointer())
                            at = b.add(b.add(b.mul(nn, c(shape["out_img"])), b.mul(b.mul(vec, c(LANES)), c(oh * ow))),
                                       b.add(b.mul(oy, c(ow)), ox))
                            for j in range(LANES):  # the 8 channels are oh * ow floats apart
                                def put(j=j):
                                    b.store(b.extract_element(y, c(j)), b.gep(ya, [b.add(at, c(j * oh * ow))]))
                                if shape["og"] % LANES and j >= shape["og"] % LANES:  # padded channels
                                    with b.if_then(b.icmp_signed("<", vec, c(vecs - 1))):
                                        put()
                                else:
                                    put()
                        else:
                            dst = b.gep(b.bitcast(outa, I32.as_pointer()), [b.add(b.mul(pix, c(out_pix)), b.mul(vec, c(LANES)))])
                            b.store(b.trunc(accs[pi][qi], ir.VectorType(I32, LANES)),
                                    b.bitcast(dst, ir.VectorType(I32, LANES).as_pointer()), align=4)

    simd._loop(b, c(0), n, c(1), lambda nn: simd._loop(
        b, c(0), c(-(-vecs // q)), c(1), lambda og: simd._loop(
            b, c(0), c(oh), c(1), lambda oy: simd._loop(
                b, c(0), c(ow), c(p), lambda ox0: blk(nn, og, oy, ox0)))))
    b.ret_void()
    return mod


FEATURES = "+avx2,+avx512f,+avx512bw,+avx512vl,+avx512vpopcntdq,+popcnt"


def assembly(shape: dict, p: int, q: int, mode: str, cpu: str | None = None) -> str:
    """The kernel's x86 assembly (tests check the instructions; ``cpu`` compiles for a CPU not this one)."""
    tm = jit.target_machine(FEATURES, cpu)
    return tm.emit_assembly(jit.optimize(build_ir(shape, p, q, mode), tm, vector_code=True))


class Kernel:
    """One compiled kernel for one layer shape and output mode."""

    def __init__(self, shape: dict, p: int, q: int, mode: str):
        llvm = jit.binding()
        tm = jit.target_machine(FEATURES)
        self._engine = llvm.create_mcjit_compiler(jit.optimize(build_ir(shape, p, q, mode), tm, vector_code=True), tm)
        self._engine.finalize_object()
        addr = self._engine.get_function_address("binary_lanes_conv")
        self._fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 7, ctypes.c_int64, ctypes.c_int64)(addr)

    def call(self, x: int, w: int, out: int, p0: int, p1: int, cls: int, kt: int, n: int, x_img: int) -> None:
        """Addresses; the caller keeps the arrays alive and in the layout :func:`build_ir` says."""
        self._fn(x, w, out, p0, p1, cls, kt, n, x_img)


@functools.cache
def _kernel(key: tuple, p: int, q: int, mode: str) -> Kernel:
    return Kernel(dict(key), p, q, mode)


def supports(w_shape, groups: int) -> bool:
    """Groups 1, or groups of whole channel vectors (8, 16, ... output channels each)."""
    return groups == 1 or (w_shape[0] // groups) % LANES == 0


class Prepared:
    """A conv's weights channel-innermost, [groups, vectors, kh, kw, words, 8], made once per weight array,
    with the kernels and per-channel epilogue tables it has used (one layer calls with one shape)."""

    variant = "avx512"

    def __init__(self, w: np.ndarray, groups: int = 1):
        o, kh, kw, wpg = w.shape
        self.o, self.groups, self.kernel_shape, self.wpg = o, groups, (kh, kw), wpg
        self.og = o // groups
        self.vectors = -(-self.og // LANES)  # per group
        self.packed = w
        wp = np.zeros((groups, self.vectors * LANES, kh, kw, wpg), np.uint64)
        wp[:, :self.og] = w.reshape(groups, self.og, kh, kw, wpg)
        self.weights = np.ascontiguousarray(
            wp.reshape(groups, self.vectors, LANES, kh, kw, wpg).transpose(0, 1, 3, 4, 5, 2))
        self._w_at = [self.weights[g].ctypes.data for g in range(groups)]  # (.ctypes costs ~1 us a call)
        self._kernels: dict = {}
        self._epilogue: tuple = ()  # (the arguments of _tables, what it made of them)
        self._classes: dict = {}  # (oh, ow) -> one class, no correction
        self._correction = None  # zero padding's classes (padding.Correction), made on first use

    def _kernel_for(self, mode: str, xp: np.ndarray, stride, oh: int, ow: int, out: np.ndarray,
                    classed: bool = False) -> Kernel:
        key = (mode, xp.shape, tuple(stride), oh, ow, classed)
        kern = self._kernels.get(key)
        if kern is None:
            kh, kw = self.kernel_shape
            out_pix = {"bits": out.shape[-1] * 8, "counts": out.shape[-1], "float": 0}[mode]
            shape = dict(kh=kh, kw=kw, wpg=self.wpg, nw=xp.shape[3], sh=stride[0], sw=stride[1], wp=xp.shape[2],
                         oh=oh, ow=ow, vectors=self.vectors, og=self.og, out_pix=out_pix, out_img=self.o * oh * ow,
                         kt_row=self.groups * self.vectors * LANES, classed=classed)
            kern = self._kernels[key] = _kernel(tuple(sorted(shape.items())),
                                                *block(ow, self.vectors, kh * kw * self.wpg), mode)
        return kern

    def _run(self, mode: str, xp: np.ndarray, stride, oh: int, ow: int, out: np.ndarray, tables):
        xp = np.ascontiguousarray(xp)
        v0, v1, kt, cls, at0, at1, at_kt, at_cls = tables
        kern = self._kernel_for(mode, xp, stride, oh, ow, out, len(kt) > 1)
        step = {"bits": self.vectors, "counts": self.vectors * LANES * 4, "float": self.og * oh * ow * 4}[mode]
        step0 = self.vectors * LANES * v0.itemsize
        step1 = self.vectors * (1 if mode == "bits" else LANES * v1.itemsize)  # bits: one flip byte per vector
        step_kt = self.vectors * LANES * 8
        x_at, out_at, n = xp.ctypes.data, out.ctypes.data, xp.shape[0]
        for g in range(self.groups):  # one group's words, weights, outputs and epilogue vectors at a time
            kern.call(x_at + g * self.wpg * 8, self._w_at[g], out_at + g * step, at0 + g * step0, at1 + g * step1,
                      at_cls, at_kt + g * step_kt, n, xp.size // n)

    def _pixel_classes(self, k: int, oh: int, ow: int, stride, pad) -> tuple[np.ndarray, np.ndarray]:
        """(each output pixel's class [oh * ow], correction per class and channel [classes, O]); pad is
        (padding, h, w) of a zero-padded input, else None (one class, no correction)."""
        if pad is None:
            key = (oh, ow)
            if key not in self._classes:
                self._classes[key] = np.zeros(oh * ow, np.int32), np.zeros((1, self.o), np.int64)
            return self._classes[key]
        if self._correction is None:
            from edgert.ops.binary.padding import Correction
            self._correction = Correction(self.packed, k // (self.kernel_shape[0] * self.kernel_shape[1]))
        return self._correction.classes(self.kernel_shape, stride, pad[0], pad[1], pad[2], oh, ow)

    def _tables(self, p0: np.ndarray, p1: np.ndarray, k: int, bits: bool, classes: tuple) -> tuple:
        """The epilogue as the kernel reads it, padded to whole vectors per group, cached for the arrays
        last passed: per pixel class, int64 k - corr - thr (bits; padded channels never fire) or k - corr
        (float); bits, one byte of flip bits per 8 channels; float, float32 scale and bias. Returns them,
        the classes and their addresses."""
        last = self._epilogue
        if last and last[0] is p0 and last[1] is p1 and last[2] == k and last[3] is classes:
            return last[4]
        cls, corr = classes
        g, og, padded = self.groups, self.og, self.vectors * LANES
        kt = np.full((len(corr), g, padded), np.iinfo(np.int64).max if bits else 0, np.int64)
        kt[:, :, :og] = (k - corr - (p0.astype(np.int64) if bits else 0)).reshape(len(corr), g, og)
        if bits:
            v0 = np.zeros(1, np.int64)
            f = np.zeros((g, padded), np.uint8)
            f[:, :og] = p1.reshape(g, og)
            v1 = np.packbits(f.reshape(-1), bitorder="little")
        else:
            v0, v1 = np.zeros((g, padded), np.float32), np.zeros((g, padded), np.float32)
            v0[:, :og], v1[:, :og] = p0.reshape(g, og), p1.reshape(g, og)
            v0 = v0.reshape(-1)
        tables = (v0, v1, kt, cls, v0.ctypes.data, v1.ctypes.data, kt.ctypes.data, cls.ctypes.data)
        self._epilogue = (p0, p1, k, classes, tables)
        return tables

    def counts(self, xp: np.ndarray, stride, oh: int, ow: int) -> np.ndarray:
        """Popcounts of x ^ w summed per output: int32 [N, oh, ow, O]; xp the padded input [N, Hp, Wp, words]."""
        padded = self.groups * self.vectors * LANES
        out = np.empty((xp.shape[0], oh, ow, padded), np.int32)
        none, cls = np.zeros(padded, np.int64), np.zeros(oh * ow, np.int32)
        self._run("counts", xp, stride, oh, ow, out, (none, none, none, cls, none.ctypes.data, none.ctypes.data,
                                                      none.ctypes.data, cls.ctypes.data))
        return out if padded == self.o else np.ascontiguousarray(out[..., :self.o])

    def bits(self, xp: np.ndarray, stride, oh: int, ow: int, k: int, thr: np.ndarray, flip: np.ndarray,
             pad: tuple | None = None) -> np.ndarray:
        """Packed output bits [N, oh, ow, ceil(O / 64)]: dot = k - 2 * count - corr < thr, XOR flip; corr the
        zero padding's correction when ``pad`` is (padding, h, w) of the unpadded input."""
        out = np.zeros((xp.shape[0], oh, ow, -(-self.o // 64)), np.uint64)  # bytes past the last vector stay 0
        classes = self._pixel_classes(k, oh, ow, stride, pad)
        self._run("bits", xp, stride, oh, ow, out, self._tables(thr, flip, k, True, classes))
        return out

    def bound_bits(self, xp: np.ndarray, stride, oh: int, ow: int, k: int, thr: np.ndarray, flip: np.ndarray):
        """The bits kernel alone on fixed arrays (groups 1, +1 padding): no padding, allocation or Python
        around it, for the bench's peak. The returned call holds the arrays it reads and writes."""
        xp = np.ascontiguousarray(xp)
        out = self.bits(xp, stride, oh, ow, k, thr, flip)
        kern = self._kernel_for("bits", xp, stride, oh, ow, out)
        tables = self._tables(thr, flip, k, True, self._pixel_classes(k, oh, ow, stride, None))
        at = (xp.ctypes.data, self._w_at[0], out.ctypes.data, *tables[4:6], tables[7], tables[6], xp.shape[0],
              xp.size // xp.shape[0])
        return lambda held=(xp, out, tables): kern.call(*at)

    def float(self, xp: np.ndarray, stride, oh: int, ow: int, k: int, scale: np.ndarray, bias: np.ndarray,
              pad: tuple | None = None) -> np.ndarray:
        """float32 NCHW [N, O, oh, ow]: (k - 2 * count - corr) * scale + bias (``pad`` as for :meth:`bits`)."""
        out = np.empty((xp.shape[0], self.o, oh, ow), np.float32)
        classes = self._pixel_classes(k, oh, ow, stride, pad)
        self._run("float", xp, stride, oh, ow, out, self._tables(scale, bias, k, False, classes))
        return out


def stream_peak(p: int, q: int, words: int = 8, reps: int = 100):
    """The kernel streaming over L1-resident words with no image around it: a 3x3 conv of ``words`` words
    per pixel computing one row of p pixels x q channel vectors (weights q * 4.5 KB at 8 words), the same
    row ``reps`` times, bits out. Returns (call, binary MACs per call)."""
    shape = dict(kh=3, kw=3, wpg=words, nw=words, sh=1, sw=1, wp=p + 2, oh=1, ow=p, vectors=q, og=q * LANES,
                 out_pix=q, out_img=0, kt_row=q * LANES, classed=False)
    k = _kernel(tuple(sorted(shape.items())), p, q, "bits")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**63, 3 * (p + 2) * words, dtype=np.int64)
    w = rng.integers(0, 2**63, q * 9 * words * LANES, dtype=np.int64)
    lim, flip, cls = np.zeros(q * LANES, np.int64), np.zeros(q, np.uint8), np.zeros(p, np.int32)
    out = np.empty(reps * p * q, np.uint8)
    held = (x, w, out, lim, flip, cls, lim)
    at = [a.ctypes.data for a in held]
    return (lambda held=held: k.call(*at, reps, 0)), reps * p * q * LANES * 9 * words * 64
