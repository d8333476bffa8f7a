"""Numba kernels for the spiking nodes, each with a plain NumPy reference beside it.

Every kernel runs a whole sequence: activations shaped [T, batch, ...], state arrays updated in place
(a single ``Engine.step`` is a sequence of length one). Arithmetic is float32 in snntorch's order of
operations, so neuron updates match snntorch bit for bit given the same current; only the synaptic
sums (Linear, recurrent weights) may differ from torch in their last bit.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from edgert.ops.spiking.nodes import (RESET_CODE, Delay, Leaky, LeakyIntegrator, LinearLeaky, Reset, RLeaky,
                                      RSynaptic, Synaptic)

SUB, ZERO, NONE = 0, 1, 2
_F = np.float32

# ----------------------------------------------------------------------------------------------
# NumPy references (the arbiter in tests): one time step, snntorch's formulas written out.


def _fire(mem, thr, graded):
    return (mem > thr).astype(_F) * _F(graded)


def _instant(mem, spk, r, thr, node) -> np.ndarray:
    """snntorch's reset_delay=False branch: reset again at once by (S/g - r)."""
    if node.reset_delay:
        return mem
    d = spk / _F(node.graded) - r
    if node.instant_reset == Reset.SUBTRACT:
        return mem - d * thr
    if node.instant_reset == Reset.ZERO:
        return mem - d * mem
    return mem


def leaky_step_ref(cur, beta, thr, mem, node: Leaky):
    """One Leaky step: returns (spikes, new membrane)."""
    r = (mem > thr).astype(_F)
    if node.reset == Reset.ZERO:
        mem = (_F(1) - r) * mem
    new = beta * mem + cur
    if node.reset == Reset.SUBTRACT:
        new = new - r * thr
    spk = _fire(new, thr, node.graded)
    return spk, _instant(new, spk, r, thr, node)


def synaptic_step_ref(cur, alpha, beta, thr, syn, mem, node: Synaptic):
    """One Synaptic step: returns (spikes, new synaptic current, new membrane)."""
    r = (mem > thr).astype(_F)
    syn = alpha * syn + cur
    new = beta * mem + syn
    if node.reset == Reset.SUBTRACT:
        new = new - r * thr
    elif node.reset == Reset.ZERO:
        new = new - new * r
    spk = _fire(new, thr, node.graded)
    return spk, syn, _instant(new, spk, r, thr, node)


def rleaky_step_ref(cur, beta, thr, rec_params, spk_prev, mem, node: RLeaky):
    """One RLeaky step: returns (spikes, new membrane); rec_params is (V,) or (W, b)."""
    r = (mem > thr).astype(_F)
    if node.all_to_all:
        w, b = rec_params
        rec = (spk_prev.astype(np.float64) @ w.T.astype(np.float64) + b).astype(_F)
    else:
        rec = spk_prev * rec_params[0]
    new = (beta * mem + cur) + rec
    if node.reset == Reset.SUBTRACT:
        new = new - r * thr
    elif node.reset == Reset.ZERO:
        new = new - r * new
    spk = _fire(new, thr, node.graded)
    return spk, _instant(new, spk, r, thr, node)


def rsynaptic_step_ref(cur, alpha, beta, thr, w, b, spk_prev, syn, mem, node: RSynaptic):
    """One RSynaptic step: returns (spikes, new synaptic current, new membrane)."""
    r = (mem > thr).astype(_F)
    rec = (spk_prev.astype(np.float64) @ w.T.astype(np.float64) + b).astype(_F)
    syn = (alpha * syn + cur) + rec
    new = beta * mem + syn
    if node.reset == Reset.SUBTRACT:
        new = new - r * thr
    elif node.reset == Reset.ZERO:
        new = new - new * r
    spk = _fire(new, thr, node.graded)
    return spk, syn, _instant(new, spk, r, thr, node)


def leaky_integrator_step_ref(cur, beta, scale, mem, node: LeakyIntegrator):
    """One leaky integrator step: returns the new membrane (also the output)."""
    return beta * mem + scale * cur


def delay_step_ref(x, buf, node: Delay):
    """One delay step: buf [steps, ...] holds the last inputs, oldest first; returns (output, new buf)."""
    return buf[0], np.concatenate([buf[1:], x[None]])


def linear_leaky_step_ref(x, wt, bias, beta, thr, mem, node: LinearLeaky):
    """One fused Linear + Leaky step (the current in float64, rounded to float32 once)."""
    cur = (x.astype(np.float64) @ wt.astype(np.float64) + bias).astype(_F)
    return leaky_step_ref(cur, beta, thr, mem, node)


# ----------------------------------------------------------------------------------------------
# Numba kernels. Arrays are flattened to [T, B, N]; state arrays [B, N] are updated in place.

_JIT = dict(nogil=True, cache=True, boundscheck=False)


@numba.njit(**_JIT)
def _update(m, c, beta, th, r, mode, delay, instant, graded):
    """One neuron of Leaky (mode from the state function); returns (new membrane, spike)."""
    one = np.float32(1.0)
    if mode == 1:
        m = (one - r) * m
    new = beta * m + c
    if mode == 0:
        new = new - r * th
    s = np.float32(1.0 if new > th else 0.0) * graded
    if not delay:
        d = s / graded - r
        if instant == 0:
            new = new - d * th
        elif instant == 1:
            new = new - d * new
    return new, s


@numba.njit(**_JIT)
def _after(new, th, r, mode, delay, instant, graded):
    """Reset of Synaptic / RLeaky applied to the freshly integrated membrane; returns (membrane, spike)."""
    if mode == 0:
        new = new - r * th
    elif mode == 1:
        new = new - r * new
    s = np.float32(1.0 if new > th else 0.0) * graded
    if not delay:
        d = s / graded - r
        if instant == 0:
            new = new - d * th
        elif instant == 1:
            new = new - d * new
    return new, s


@numba.njit(inline="always", **_JIT)
def _leaky_row(cur, beta, thr, mem, out, mode, delay, instant, graded):
    """One Leaky step of one sample's N neurons (cur, mem, out are [N] rows; mem in place); returns the
    spike count. Nothing branches on a neuron's value, so LLVM vectorizes the loop; for snntorch's
    default reset (subtract, delayed) the settings are passed as constants so the other resets' code
    drops out of the loop."""
    if mode == SUB and delay:
        return _leaky_loop(cur, beta, thr, mem, out, SUB, True, NONE, graded)
    return _leaky_loop(cur, beta, thr, mem, out, mode, delay, instant, graded)


@numba.njit(inline="always", **_JIT)  # inlined, so the constant settings reach LLVM
def _leaky_loop(cur, beta, thr, mem, out, mode, delay, instant, graded):
    n = np.int32(0)  # an int32 count keeps the loop 8 floats wide (an int64 one halves it to 4)
    for i in range(cur.shape[0]):
        m = mem[i]
        r = np.float32(1.0 if m > thr[i] else 0.0)
        m, s = _update(m, cur[i], beta[i], thr[i], r, mode, delay, instant, graded)
        mem[i] = m
        out[i] = s
        n = np.int32(n + np.int32(s != 0))
    return n


@numba.njit(**_JIT)
def leaky_seq(cur, beta, thr, mem, out, mode, delay, instant, graded):
    """Leaky over a sequence: cur [T, B, N] -> out [T, B, N]; mem [B, N] in place; returns spike count."""
    T, B, N = cur.shape
    n = 0
    for t in range(T):
        for b in range(B):
            n += _leaky_row(cur[t, b], beta, thr, mem[b], out[t, b], mode, delay, instant, graded)
    return n


@numba.njit(**_JIT)
def synaptic_seq(cur, alpha, beta, thr, syn, mem, out, mode, delay, instant, graded):
    """Synaptic over a sequence; syn and mem [B, N] in place; returns the spike count."""
    T, B, N = cur.shape
    n = 0
    for t in range(T):
        for b in range(B):
            for i in range(N):
                m = mem[b, i]
                r = np.float32(1.0 if m > thr[i] else 0.0)
                sy = alpha[i] * syn[b, i] + cur[t, b, i]
                syn[b, i] = sy
                m, s = _after(beta[i] * m + sy, thr[i], r, mode, delay, instant, graded)
                mem[b, i] = m
                out[t, b, i] = s
                n += s != 0
    return n


@numba.njit(**_JIT)
def rleaky_seq(cur, beta, thr, rec_wt, rec_b, v, all_to_all, spk, mem, out, mode, delay, instant, graded):
    """RLeaky over a sequence. The recurrent Linear is event-driven: rows of rec_wt ([N, N], W
    transposed) are added for the neurons that spiked at t-1. spk and mem [B, N] in place."""
    T, B, N = cur.shape
    rec = np.empty(N, np.float32)
    n = 0
    for t in range(T):
        for b in range(B):
            if all_to_all:
                for i in range(N):
                    rec[i] = rec_b[i]
                for j in range(N):
                    sj = spk[b, j]
                    if sj != 0:
                        for i in range(N):
                            rec[i] += sj * rec_wt[j, i]
            else:
                for i in range(N):
                    rec[i] = spk[b, i] * v[i]
            for i in range(N):
                m = mem[b, i]
                r = np.float32(1.0 if m > thr[i] else 0.0)
                m, s = _after((beta[i] * m + cur[t, b, i]) + rec[i], thr[i], r, mode, delay, instant, graded)
                mem[b, i] = m
                out[t, b, i] = s
                n += s != 0
            for i in range(N):
                spk[b, i] = out[t, b, i]
    return n


@numba.njit(**_JIT)
def leaky_integrator_seq(cur, beta, scale, mem, out):
    """Leaky integrator over a sequence: out[t] = mem = beta mem + scale cur[t]; mem [B, N] in place."""
    T, B, N = cur.shape
    for t in range(T):
        for b in range(B):
            for i in range(N):
                m = beta[i] * mem[b, i] + scale[i] * cur[t, b, i]
                mem[b, i] = m
                out[t, b, i] = m


@numba.njit(**_JIT)
def delay_seq(x, buf, pos, out):
    """Delay over a sequence: buf [D, B, N] is a ring of the last D inputs, buf[pos[0]] the oldest;
    out[t] = the oldest, then x[t] takes its slot."""
    T, B, N = x.shape
    D = buf.shape[0]
    p = pos[0]
    for t in range(T):
        for b in range(B):
            for i in range(N):
                out[t, b, i] = buf[p, b, i]
                buf[p, b, i] = x[t, b, i]
        p = (p + 1) % D
    pos[0] = p


@numba.njit(**_JIT)
def rsynaptic_seq(cur, alpha, beta, thr, rec_wt, rec_b, spk, syn, mem, out, mode, delay, instant, graded):
    """RSynaptic over a sequence, the recurrent Linear event-driven as in rleaky_seq; spk, syn and mem
    [B, N] in place; returns the spike count."""
    T, B, N = cur.shape
    rec = np.empty(N, np.float32)
    n = 0
    for t in range(T):
        for b in range(B):
            for i in range(N):
                rec[i] = rec_b[i]
            for j in range(N):
                sj = spk[b, j]
                if sj != 0:
                    for i in range(N):
                        rec[i] += sj * rec_wt[j, i]
            for i in range(N):
                m = mem[b, i]
                r = np.float32(1.0 if m > thr[i] else 0.0)
                sy = (alpha[i] * syn[b, i] + cur[t, b, i]) + rec[i]
                syn[b, i] = sy
                m, s = _after(beta[i] * m + sy, thr[i], r, mode, delay, instant, graded)
                mem[b, i] = m
                out[t, b, i] = s
                n += s != 0
            for i in range(N):
                spk[b, i] = out[t, b, i]
    return n


LANES = 8  # floats per vector in the row add: AVX2 ymm on x86 (two xmm on SSE-only, two q on NEON)
SPAN = 8  # vectors of sums held in registers across all rows of a time step (64 outputs; 16 ymm exist)


PREFETCH = 8  # events ahead whose weight-row span is prefetched (rows come from L3: the matrix outgrows L2)


def _sum_loop(builder, n, sums, add):
    """Emit ``for j in range(n): sums = add(j, sums)`` with the sums carried in registers (phis) across
    the loop; returns them, the builder placed after the loop."""
    i64 = llvm_ir.IntType(64)
    entry = builder.block
    head, body, done = (builder.append_basic_block(name) for name in ("rows", "row", "rows_done"))
    builder.branch(head)
    builder.position_at_end(head)
    j = builder.phi(i64)
    j.add_incoming(llvm_ir.Constant(i64, 0), entry)
    carried = [builder.phi(s.type) for s in sums]
    for phi, s0 in zip(carried, sums):
        phi.add_incoming(s0, entry)
    builder.cbranch(builder.icmp_signed("<", j, n), body, done)
    builder.position_at_end(body)
    new = add(j, carried)
    j.add_incoming(builder.add(j, llvm_ir.Constant(i64, 1)), builder.block)
    for phi, s1 in zip(carried, new):
        phi.add_incoming(s1, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return carried


def _span_adder(vectors: int, unit: bool, masked: bool = False):
    """An intrinsic add(acc, wt, idx, val, n, m, o0): acc[o0 : o0 + LANES * vectors] += val[j] *
    wt[idx[j], same span] for j = 0 .. n-1 in that order (a multiply, then an add: the rounding of the
    plain loop, no fused multiply-add). The span's sums stay in <LANES x float> registers across all n
    rows, so each row costs one load and one add per vector, not a load, add and store of acc; LLVM
    emits the host's vector instructions (vmulps/vaddps on ymm with AVX2). While adding row j it
    prefetches the span of row idx[j + PREFETCH] when j + PREFETCH < m (idx's entries past n, the next
    time steps' events, are listed too). With ``unit`` every val[j] is 1.0, whose product is the row
    itself exactly, so the multiply is left out. ``masked`` (one vector): the lanes past acc's end are
    neither loaded nor stored (a masked load/store), for the outputs after the last whole vector."""

    @intrinsic
    def add(typingctx, acc, wt, idx, val, n, m, o0):
        def codegen(context, builder, signature, args):
            a_acc, a_wt, a_idx, a_val = (context.make_array(ty)(context, builder, v)
                                         for ty, v in zip(signature.args[:4], args[:4]))
            n_, m_, o0_ = args[4], args[5], args[6]
            i8, i32, i64 = llvm_ir.IntType(8), llvm_ir.IntType(32), llvm_ir.IntType(64)
            vec = llvm_ir.VectorType(llvm_ir.FloatType(), LANES)
            vptr = vec.as_pointer()
            prefetch = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [i8.as_pointer(), i32, i32, i32]),
                "llvm.prefetch.p0")

            def vector_at(base, v):
                return builder.bitcast(builder.gep(base, [llvm_ir.Constant(i64, LANES * v)]), vptr)

            if masked:
                mask_ty = llvm_ir.VectorType(llvm_ir.IntType(1), LANES)
                left = builder.sub(builder.extract_value(a_acc.shape, 0), o0_)
                splat = builder.insert_element(llvm_ir.Constant(llvm_ir.VectorType(i64, LANES), llvm_ir.Undefined),
                                               left, llvm_ir.Constant(i32, 0))
                splat = builder.shuffle_vector(splat, llvm_ir.Constant(llvm_ir.VectorType(i64, LANES), llvm_ir.Undefined),
                                               llvm_ir.Constant(llvm_ir.VectorType(i32, LANES), [0] * LANES))
                lane_mask = builder.icmp_signed("<", llvm_ir.Constant(llvm_ir.VectorType(i64, LANES), list(range(LANES))),
                                                splat)
                masked_load = cgutils.get_or_insert_function(
                    builder.module, llvm_ir.FunctionType(vec, [vptr, i32, mask_ty, vec]),
                    f"llvm.masked.load.v{LANES}f32.p0")
                masked_store = cgutils.get_or_insert_function(
                    builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [vec, vptr, i32, mask_ty]),
                    f"llvm.masked.store.v{LANES}f32.p0")

            def load(at):
                if masked:
                    return builder.call(masked_load, [at, llvm_ir.Constant(i32, 4), lane_mask,
                                                      llvm_ir.Constant(vec, [0.0] * LANES)])
                return builder.load(at, align=4)

            acc_span = builder.gep(a_acc.data, [o0_])
            sums = [load(vector_at(acc_span, v)) for v in range(vectors)]
            row_bytes = builder.extract_value(a_wt.strides, 0)
            wt_base = builder.ptrtoint(a_wt.data, i64)

            def span_of(j):
                k = builder.load(builder.gep(a_idx.data, [j]))
                row = builder.inttoptr(builder.add(wt_base, builder.mul(k, row_bytes)), a_wt.data.type)
                return builder.gep(row, [o0_])

            def add_row(j, carried):
                ahead = builder.add(j, llvm_ir.Constant(i64, PREFETCH))
                ahead = builder.select(builder.icmp_signed("<", ahead, m_), ahead, j)
                later = span_of(ahead)
                for line in range(max(1, vectors * LANES * 4 // 64)):  # one prefetch per 64-byte line
                    at = builder.bitcast(builder.gep(later, [llvm_ir.Constant(i64, 16 * line)]), i8.as_pointer())
                    builder.call(prefetch, [at, llvm_ir.Constant(i32, 0), llvm_ir.Constant(i32, 3),
                                            llvm_ir.Constant(i32, 1)])
                row_span = span_of(j)
                rows = [load(vector_at(row_span, v)) for v in range(vectors)]
                if not unit:
                    xv = builder.load(builder.gep(a_val.data, [j]))
                    xs = builder.insert_element(llvm_ir.Constant(vec, llvm_ir.Undefined), xv,
                                                llvm_ir.Constant(i32, 0))
                    xs = builder.shuffle_vector(xs, llvm_ir.Constant(vec, llvm_ir.Undefined),
                                                llvm_ir.Constant(llvm_ir.VectorType(i32, LANES), [0] * LANES))
                    rows = [builder.fmul(xs, r) for r in rows]
                return [builder.fadd(phi, r) for phi, r in zip(carried, rows)]

            for v, phi in enumerate(_sum_loop(builder, n_, sums, add_row)):
                if masked:
                    builder.call(masked_store, [phi, vector_at(acc_span, v), llvm_ir.Constant(i32, 4), lane_mask])
                else:
                    builder.store(phi, vector_at(acc_span, v), align=4)
            return context.get_dummy_value()

        return types.void(acc, wt, idx, val, n, m, o0), codegen

    return add


_add_span, _add_span_unit = _span_adder(SPAN, False), _span_adder(SPAN, True)
_add_vector, _add_vector_unit = _span_adder(1, False), _span_adder(1, True)
_add_tail, _add_tail_unit = _span_adder(1, False, masked=True), _span_adder(1, True, masked=True)


@numba.njit(inline="always", **_JIT)
def _add_rows(acc, wt, idx, val, n, m, unit):
    """acc += val[j] * wt[idx[j]] for j < n, rows in order: spans of SPAN vectors, then single vectors,
    then the outputs left over in one masked vector (the same order of roundings for every output).
    idx has m valid entries (n and the later events, for the prefetch); ``unit``: every val[j] is 1.0."""
    O = acc.shape[0]
    o0 = 0
    while o0 + SPAN * LANES <= O:
        if unit:
            _add_span_unit(acc, wt, idx, val, n, m, o0)
        else:
            _add_span(acc, wt, idx, val, n, m, o0)
        o0 += SPAN * LANES
    while o0 + LANES <= O:
        if unit:
            _add_vector_unit(acc, wt, idx, val, n, m, o0)
        else:
            _add_vector(acc, wt, idx, val, n, m, o0)
        o0 += LANES
    if o0 < O:
        if unit:
            _add_tail_unit(acc, wt, idx, val, n, m, o0)
        else:
            _add_tail(acc, wt, idx, val, n, m, o0)


# Row adds blocked (AVX-512: a zmm per row; AVX2: two ymm): the step-by-step adder reads every event's whole
# weight row from L2 (the SHD layer's 700 x 1 KB rows do not fit L1) and is bound by L2 bandwidth. Blocked,
# one column span of BLOCK_LANES outputs (one 64-byte line per row) of a row block's inputs stays in L1
# while the events of all sample-steps in that row range are added, BLOCK_STEPS sample-steps at a time (each
# step's sums one dependency chain, so several chains keep the adder busy). Row blocks are as large as L1
# holds (block_rows): each block costs a call per group and a store and reload of the sums, and on a
# Sapphire Rapids-class Xeon one 704-row block (45 KB of its 48 KB L1) ran the SHD layer in 35 us where
# blocks of 256 took 45. Each output's sum still starts at the bias and takes its rows in ascending input
# order, so the bits match the step-by-step adder's. Shorter event lists in a group are padded with the row
# of -0.0 past the last input (x + -0.0 is x for every x, -0.0 included).
BLOCK_LANES = 16  # floats in a zmm
ROW_BYTES = BLOCK_LANES * 4  # one input's row in a span of block_weights
BLOCK_STEPS = 4  # sample-steps added together (Sapphire Rapids-class Xeon: 3-5 within noise at batch 1, 4 the
# fastest at batch 64; 2, 6 and 8 slower)
TILE_BYTES = 1 << 17  # sums of the sample-steps taken at a time, so they and their lists stay in L2


def _block_sums(context, builder, signature, args):
    """The code of ``_add_block`` up to its sums: returns (the BLOCK_STEPS sums after the loop, cur's
    span of sample-step s0 + u as a function of u, cur's rows)."""
    a_cur, a_bias, a_wb, a_idx = (context.make_array(ty)(context, builder, v)
                                  for ty, v in zip(signature.args[:4], args[:4]))
    off_, n_, s0_, o0_, first_ = args[4:9]
    i64 = llvm_ir.IntType(64)
    vptr = llvm_ir.VectorType(llvm_ir.FloatType(), BLOCK_LANES).as_pointer()
    rows = builder.extract_value(a_cur.shape, 0)
    row_bytes = builder.extract_value(a_cur.strides, 0)
    cur_base = builder.ptrtoint(a_cur.data, i64)
    start = builder.load(builder.bitcast(builder.gep(a_bias.data, [o0_]), vptr), align=4)

    def span_of(u):  # cur's span of sample-step s0 + u (row 0 stands in past the last row)
        s = builder.add(s0_, llvm_ir.Constant(i64, u))
        s = builder.select(builder.icmp_signed("<", s, rows), s, llvm_ir.Constant(i64, 0))
        row = builder.inttoptr(builder.add(cur_base, builder.mul(s, row_bytes)), a_cur.data.type)
        return builder.bitcast(builder.gep(row, [o0_]), vptr)

    sums = [builder.select(first_, start, builder.load(span_of(u), align=4)) for u in range(BLOCK_STEPS)]
    wb_base = builder.ptrtoint(a_wb.data, i64)
    lists = builder.gep(a_idx.data, [off_])

    def add_rows(j, carried):
        new = []
        for u, phi in enumerate(carried):
            at = builder.gep(lists, [builder.add(builder.mul(j, llvm_ir.Constant(i64, BLOCK_STEPS)),
                                                 llvm_ir.Constant(i64, u))])
            row = builder.inttoptr(builder.add(wb_base, builder.sext(builder.load(at), i64)), vptr)
            new.append(builder.fadd(phi, builder.load(row, align=4)))
        return new

    return _sum_loop(builder, n_, sums, add_rows), span_of, rows


@intrinsic
def _add_block(typingctx, cur, bias, wb, pidx, off, n, s0, o0, first):
    """cur[s0 + u, o0 : o0 + BLOCK_LANES] (+)= sum over j < n of the row at byte offset
    pidx[off + j * BLOCK_STEPS + u] of wb (rows of BLOCK_LANES floats), for u < BLOCK_STEPS and
    s0 + u < cur's rows, in j order; the sums start at bias[o0 : ...] when ``first``, else at cur."""

    def codegen(context, builder, signature, args):
        sums, span_of, rows = _block_sums(context, builder, signature, args)
        for u, phi in enumerate(sums):
            inside = builder.icmp_signed("<", builder.add(args[6], llvm_ir.Constant(llvm_ir.IntType(64), u)), rows)
            with builder.if_then(inside):
                builder.store(phi, span_of(u), align=4)
        return context.get_dummy_value()

    return types.void(cur, bias, wb, pidx, off, n, s0, o0, first), codegen


@intrinsic
def _add_block_leaky(typingctx, cur, bias, wb, pidx, off, n, s0, o0, first, s_first, steps, b_first, mem, out,
                     beta, thr, graded):
    """``_add_block`` for the last row block, the sums then taken by the Leaky update in registers
    (snntorch's default reset: subtract, delayed; the float32 operations of ``_update``) instead of
    stored: sample-step s = s_first + u (< steps) of sample b (b_first for u = 0, then counting round
    the batch) updates mem[b, o0 : ...] and writes its spikes to out[s, o0 : ...] (out [steps, O]; the
    lanes past the last column masked). Returns the spikes."""

    def codegen(context, builder, signature, args):
        sums, _, _ = _block_sums(context, builder, signature, args)
        s_first_, steps_, b_, graded_ = args[9], args[10], args[11], args[16]
        a_mem, a_out, a_beta, a_thr = (context.make_array(signature.args[i])(context, builder, args[i])
                                       for i in (12, 13, 14, 15))
        o0_ = args[7]
        i1, i32, i64 = llvm_ir.IntType(1), llvm_ir.IntType(32), llvm_ir.IntType(64)
        w = BLOCK_LANES
        vec, mvec = llvm_ir.VectorType(llvm_ir.FloatType(), w), llvm_ir.VectorType(i1, w)
        one, zero = llvm_ir.Constant(vec, [1.0] * w), llvm_ir.Constant(vec, [0.0] * w)
        load = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(vec, [vec.as_pointer(), i32, mvec, vec]),
            f"llvm.masked.load.v{w}f32.p0")
        store = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [vec, vec.as_pointer(), i32, mvec]),
            f"llvm.masked.store.v{w}f32.p0")
        ctpop = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(llvm_ir.IntType(w),
                                                                                    [llvm_ir.IntType(w)]),
                                               f"llvm.ctpop.i{w}")
        cols = builder.sub(builder.extract_value(a_mem.shape, 1), o0_)
        left = builder.insert_element(llvm_ir.Constant(llvm_ir.VectorType(i64, w), llvm_ir.Undefined), cols,
                                      llvm_ir.Constant(i32, 0))
        left = builder.shuffle_vector(left, llvm_ir.Constant(llvm_ir.VectorType(i64, w), llvm_ir.Undefined),
                                      llvm_ir.Constant(llvm_ir.VectorType(i32, w), [0] * w))
        lanes = builder.icmp_signed("<", llvm_ir.Constant(llvm_ir.VectorType(i64, w), list(range(w))), left)

        def at(a, *index):  # the span at o0 of a[index...]
            ptr = builder.ptrtoint(a.data, i64)
            for k, v in enumerate(index):
                ptr = builder.add(ptr, builder.mul(v, builder.extract_value(a.strides, k)))
            return builder.bitcast(builder.gep(builder.inttoptr(ptr, a.data.type), [o0_]), vec.as_pointer())

        def masked(ptr):
            return builder.call(load, [ptr, llvm_ir.Constant(i32, 4), lanes, zero])

        beta_, thr_ = masked(at(a_beta)), masked(at(a_thr))
        g = builder.insert_element(llvm_ir.Constant(vec, llvm_ir.Undefined), graded_, llvm_ir.Constant(i32, 0))
        g = builder.shuffle_vector(g, llvm_ir.Constant(vec, llvm_ir.Undefined),
                                   llvm_ir.Constant(llvm_ir.VectorType(i32, w), [0] * w))
        batch = builder.extract_value(a_mem.shape, 0)
        spikes = cgutils.alloca_once_value(builder, llvm_ir.Constant(i64, 0))
        for u, total in enumerate(sums):  # in u order: a later sample-step of one sample sees the earlier
            s = builder.add(s_first_, llvm_ir.Constant(i64, u))
            b = b_
            with builder.if_then(builder.icmp_signed("<", s, steps_)):
                mem_at, out_at = at(a_mem, b), at(a_out, s)
                m = masked(mem_at)
                r = builder.select(builder.fcmp_ordered(">", m, thr_), one, zero)
                new = builder.fsub(builder.fadd(builder.fmul(beta_, m), total), builder.fmul(r, thr_))
                fire = builder.and_(builder.fcmp_ordered(">", new, thr_), lanes)
                builder.call(store, [new, mem_at, llvm_ir.Constant(i32, 4), lanes])
                builder.call(store, [builder.fmul(builder.select(fire, one, zero), g), out_at,
                                     llvm_ir.Constant(i32, 4), lanes])
                got = builder.zext(builder.call(ctpop, [builder.bitcast(fire, llvm_ir.IntType(w))]), i64)
                builder.store(builder.add(builder.load(spikes), got), spikes)
            b_ = builder.add(b, llvm_ir.Constant(i64, 1))
            b_ = builder.select(builder.icmp_signed("==", b_, batch), llvm_ir.Constant(i64, 0), b_)
        return builder.load(spikes)

    return types.int64(cur, bias, wb, pidx, off, n, s0, o0, first, s_first, steps, b_first, mem, out, beta, thr,
                       graded), codegen


@functools.cache
def l1_data_bytes() -> int:
    """This host's level-1 data cache per core, from sysfs (32 KB where it does not say)."""
    from pathlib import Path

    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "1" and (index / "type").read_text().strip() == "Data":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]] if size[-1] in "KM" else int(size)
        except (OSError, ValueError):
            break
    return 32 << 10


def block_rows(k: int) -> int:
    """Inputs per row block for k inputs: blocks of equal size, multiples of 64 inputs, each block's
    span of rows within 15/16 of L1 (the rest for the event lists and the sums)."""
    most = max(64, l1_data_bytes() * 15 // 16 // ROW_BYTES // 64 * 64)
    blocks = -(-k // most)
    return -(-k // blocks // 64) * 64 if k else 64


def block_weights(wt: np.ndarray, bias: np.ndarray, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The blocked adder's arguments: wt [K, O] as spans [ceil(O / BLOCK_LANES), K + 1, BLOCK_LANES]
    (row K the -0.0 pad row, the columns past O zero) on 64-byte boundaries, the bias zero-padded to
    whole spans, and the inputs per row block (``rows``, a multiple of 64; by default block_rows(K))."""
    from edgert.artifact import aligned

    k, o = wt.shape
    rows = block_rows(k) if rows is None else rows
    if rows <= 0 or rows % 64:
        raise ValueError(f"block_weights: rows must be a positive multiple of 64, not {rows}")
    spans = -(-o // BLOCK_LANES)
    wb = np.zeros((k + 1, spans * BLOCK_LANES), np.float32)
    wb[:k, :o] = wt
    wb[k] = -0.0
    padded = np.zeros(spans * BLOCK_LANES, np.float32)
    padded[:o] = bias
    return aligned(wb.reshape(k + 1, spans, BLOCK_LANES).transpose(1, 0, 2)), aligned(padded), rows


NO_BLOCKS = (np.zeros((0, 0, BLOCK_LANES), np.float32), np.zeros(0, np.float32), 64)  # the step-by-step adder


def _mask_of(vectors: int):
    """An intrinsic mask(bits, k): a uint64 whose bit i (i < LANES * vectors) is set when bits[k + i],
    a float32's bit pattern, is nonzero sign aside (-0.0 is no event). One vector compare and one
    movemask per LANES inputs (vpcmpeqd/vmovmskps on AVX2), no branch."""

    @intrinsic
    def mask(typingctx, bits, k):
        def codegen(context, builder, signature, args):
            a_bits = context.make_array(signature.args[0])(context, builder, args[0])
            i32, i64 = llvm_ir.IntType(32), llvm_ir.IntType(64)
            vec = llvm_ir.VectorType(i32, LANES)
            base = builder.gep(a_bits.data, [args[1]])
            out = llvm_ir.Constant(i64, 0)
            for v in range(vectors):
                ptr = builder.bitcast(builder.gep(base, [llvm_ir.Constant(i64, LANES * v)]), vec.as_pointer())
                magnitude = builder.shl(builder.load(ptr, align=4), llvm_ir.Constant(vec, [1] * LANES))
                nonzero = builder.icmp_unsigned("!=", magnitude, llvm_ir.Constant(vec, [0] * LANES))
                lanes = builder.zext(builder.bitcast(nonzero, llvm_ir.IntType(LANES)), i64)
                out = builder.or_(out, builder.shl(lanes, llvm_ir.Constant(i64, LANES * v)))
            return out

        return types.uint64(bits, k), codegen

    return mask


_mask_wide = _mask_of(64 // LANES)  # 64 inputs: one uint64
_mask_vector = _mask_of(1)


def events_ref(xrow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The events of one row of input: indices of its nonzero entries (ascending) and their values."""
    idx = np.flatnonzero(xrow)
    return idx, xrow[idx]


@numba.njit(inline="always", **_JIT)
def _append_set_bits(m, k, xrow, idx, val, n):
    """Append input k + i for each set bit i of mask m (lowest first); returns the new length."""
    while m:
        i = k + np.int64(trailing_zeros(m))
        idx[n] = i
        val[n] = xrow[i]
        n += 1
        m &= m - np.uint64(1)
    return n


@numba.njit(inline="always", **_JIT)
def _append_events(xrow, bits, idx, val, n):
    """Append xrow's nonzero entries to the event list: indices to idx[n:], values to val[n:]; returns
    the new length. bits is xrow's float32 bit patterns as uint32. Masks of 64 inputs (then of LANES,
    then one by one) are made without branches; only the set bits are visited."""
    K = xrow.shape[0]
    k = 0
    while k + 64 <= K:
        n = _append_set_bits(_mask_wide(bits, k), k, xrow, idx, val, n)
        k += 64
    while k + LANES <= K:
        n = _append_set_bits(_mask_vector(bits, k), k, xrow, idx, val, n)
        k += LANES
    for i in range(k, K):
        idx[n] = i
        val[n] = xrow[i]
        n += xrow[i] != 0
    return n


ONE_BITS = np.uint32(0x3F800000)  # 1.0 as float32 bits


@numba.njit(inline="always", **_JIT)
def _row_masks(bits, masks):
    """masks[w] gets a bit i for input 64 * w + i of one row (bits: its float32 bit patterns) when that
    input is nonzero, sign aside: masks of 64 inputs, the last from masks of LANES and single inputs."""
    K = bits.shape[0]
    w, k = 0, 0
    while k + 64 <= K:
        masks[w] = _mask_wide(bits, k)
        w += 1
        k += 64
    if k < K:
        m, j = np.uint64(0), k
        while j + LANES <= K:
            m |= _mask_vector(bits, j) << np.uint64(j - k)
            j += LANES
        for i in range(j, K):
            if bits[i] & np.uint32(0x7FFFFFFF):  # nonzero, sign aside (a shift would widen to 64 bits)
                m |= np.uint64(1) << np.uint64(i - k)
        masks[w] = m


@numba.njit(inline="always", **_JIT)
def _slot_set_bits(m, k, bits, slots, at, ones):
    """For each set bit i of mask m (lowest first) write input k + i's row offset to slots[at], then
    at += BLOCK_STEPS; returns (at, ones and every such input 1.0)."""
    while m:
        i = k + np.int64(trailing_zeros(m))
        slots[at] = i * ROW_BYTES
        ones &= bits[i] == ONE_BITS
        at += BLOCK_STEPS
        m &= m - np.uint64(1)
    return at, ones


@numba.njit(inline="always", **_JIT)
def _block_lists(bits, most, rows, pidx, boff, blen):
    """The event lists of ``_add_block`` from bits [steps, K] (the input's float32 bit patterns): for row
    block c (``rows`` inputs, a multiple of 64) and group g of BLOCK_STEPS sample-steps, the row offsets
    of the group's events in that block, interleaved by sample-step, at pidx[boff[c, g]:], blen[c, g]
    per sample-step, shorter lists padded with the -0.0 row; pidx needs room for min(most + BLOCK_STEPS
    * K, steps * K) * BLOCK_STEPS slots. Each sample-step's list is written in place (its slots are
    BLOCK_STEPS apart from the block's start), so no list is copied. Returns (events, every event 1.0),
    stopping after the group that passes ``most`` events."""
    steps, K = bits.shape
    blocks, groups = boff.shape
    words, per = -(-K // 64), rows // 64
    masks = np.empty((BLOCK_STEPS, words), np.uint64)
    count = np.empty(BLOCK_STEPS, np.int64)
    n, off, ones = 0, 0, True
    for g in range(groups):
        for u in range(BLOCK_STEPS):
            if g * BLOCK_STEPS + u < steps:
                _row_masks(bits[g * BLOCK_STEPS + u], masks[u])
            else:
                masks[u, :] = 0
        for c in range(blocks):
            m = 0
            for u in range(BLOCK_STEPS):
                row, at = bits[min(g * BLOCK_STEPS + u, steps - 1)], off + u
                for w in range(c * per, min(words, (c + 1) * per)):
                    at, ones = _slot_set_bits(masks[u, w], 64 * w, row, pidx, at, ones)
                count[u] = (at - off - u) // BLOCK_STEPS
                m = max(m, count[u])
                n += count[u]
            for u in range(BLOCK_STEPS):
                for j in range(count[u], m):
                    pidx[off + j * BLOCK_STEPS + u] = K * ROW_BYTES
            boff[c, g], blen[c, g] = off, m
            off += m * BLOCK_STEPS
        if n > most:
            break
    return n, ones


@numba.njit(**_JIT)
def events(x, bits, idx, val, ptr, most):
    """Event lists of x [T, B, K] (bits: x viewed as uint32), time step by time step: the events of
    (t, b) are idx[ptr[s]:ptr[s + 1]] and val[...], s = t * B + b, inputs ascending. Stops once there
    are more than ``most`` events; returns their number (then > most, and ptr is not filled). idx and
    val need room for min(most + K, x.size) events (the row that crosses the limit is listed in full,
    and a row's tail writes one slot past its last event)."""
    T, B, K = x.shape
    if most < 0 or min(idx.shape[0], val.shape[0]) < min(most + K, T * B * K) or ptr.shape[0] <= T * B:
        raise ValueError("events: most must be >= 0, idx and val need room for min(most + K, x.size) "
                         "events, ptr for T * B + 1 offsets")
    n = 0
    ptr[0] = 0
    for t in range(T):
        for b in range(B):
            n = _append_events(x[t, b], bits[t, b], idx, val, n)
            if n > most:
                return n
            ptr[t * B + b + 1] = n
    return n


@numba.njit(**_JIT)
def linear_leaky_events(x, wt, bias, wb, wb_bias, rows, beta, thr, mem, out, most, mode, delay, instant, graded):
    """Fused Linear + Leaky over a whole sequence in one call, event-driven: the inputs that spiked are
    listed for all time steps first (``events``), then for each time step and sample their weight rows
    (wt [K, O]: one contiguous row per input) are added in input order after the bias, and the
    neurons updated from those sums. x [T, B, K] (C-contiguous) -> out [T, B, O]; mem [B, O] in place.
    The event lists are allocated here, in compiled code, once per call. Given ``block_weights(wt,
    bias)`` as (wb, wb_bias, rows) (else NO_BLOCKS), binary input takes the blocked adder, with the same
    sums.

    Returns (input events, spikes). When the input holds more than ``most`` (>= 0) events (the dense
    path is then the faster), returns (a count above most, 0) at once, and when an event is NaN or Inf
    (-1, 0), in both cases leaving mem and out untouched."""
    T, B, K = x.shape
    O = wt.shape[1]
    spikes = 0
    if wb.shape[0] > 0:
        steps, groups, blocks = T * B, -(-(T * B) // BLOCK_STEPS), -(-K // rows)
        pidx = np.empty(BLOCK_STEPS * min(most + BLOCK_STEPS * K, steps * K), np.int32)
        boff, blen = np.empty((blocks, groups), np.int64), np.empty((blocks, groups), np.int64)
        n, ones = _block_lists(x.reshape(steps, K).view(np.uint32), most, rows, pidx, boff, blen)
        if n > most:
            return n, 0
        if ones:  # else (graded or NaN input) the events are listed again below
            fused = mode == SUB and delay  # snntorch's default: the update runs on the sums in registers
            if fused and blocks == 1:  # no sums kept between blocks: one tile, each weight span read once
                tile, kept = groups, 1  # (cur's one row is read, and its value dropped, for the first block)
            else:
                tile = min(groups, max(1, TILE_BYTES // (wb.shape[0] * BLOCK_LANES * 4 * BLOCK_STEPS)))  # groups
                kept = tile * BLOCK_STEPS
            cur = np.empty((kept, wb.shape[0] * BLOCK_LANES), np.float32)
            flat_out = out.reshape(steps, O)
            for g0 in range(0, groups, tile):
                g1 = min(groups, g0 + tile)
                for span in range(wb.shape[0]):
                    for c in range(blocks):
                        b = g0 * BLOCK_STEPS % B  # the sample of the group's first sample-step
                        for g in range(g0, g1):
                            if fused and c == blocks - 1:
                                spikes += _add_block_leaky(cur, wb_bias, wb[span], pidx, boff[c, g], blen[c, g],
                                                           (g - g0) * BLOCK_STEPS, span * BLOCK_LANES, c == 0,
                                                           g * BLOCK_STEPS, steps, b, mem, flat_out, beta, thr,
                                                           graded)
                            else:
                                _add_block(cur, wb_bias, wb[span], pidx, boff[c, g], blen[c, g],
                                           (g - g0) * BLOCK_STEPS, span * BLOCK_LANES, c == 0)
                            b += BLOCK_STEPS
                            while b >= B:
                                b -= B
                if fused:
                    continue
                lo, hi = g0 * BLOCK_STEPS, min(steps, g1 * BLOCK_STEPS)  # the tile's sample-steps
                for t in range(lo // B, (hi - 1) // B + 1):  # (a loop over s with t, b from it ran slower)
                    for b in range(max(0, lo - t * B), min(B, hi - t * B)):
                        spikes += _leaky_row(cur[t * B + b - lo, :O], beta, thr, mem[b], out[t, b], mode, delay,
                                             instant, graded)
            return n, spikes
    room = min(most + K, T * B * K)
    idx, val, ptr, acc = np.empty(room, np.int64), np.empty(room, np.float32), np.empty(T * B + 1, np.int64), \
        np.empty(O, np.float32)
    n = events(x, x.view(np.uint32), idx, val, ptr, most)
    if n > most:
        return n, 0
    unit = finite = True
    for j in range(n):  # zeros are finite, so checking the events checks the input
        unit &= val[j] == 1.0
        finite &= val[j] - val[j] == 0.0
    if not finite:
        return -1, 0
    for t in range(T):
        for b in range(B):
            s = t * B + b
            for o in range(O):
                acc[o] = bias[o]
            _add_rows(acc, wt, idx[ptr[s]:], val[ptr[s]:], ptr[s + 1] - ptr[s], n - ptr[s], unit)
            spikes += _leaky_row(acc, beta, thr, mem[b], out[t, b], mode, delay, instant, graded)
    return n, spikes


@functools.cache
def host_isa() -> str:
    """The widest vector ISA of this host: Numba compiles the kernels for the host CPU when first used
    (never stored in an artifact)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return next((f for f in ("avx512f", "avx2", "sse4.2", "neon") if features.get(f)), "scalar")


ADDERS = ("blocked", "step")  # how the event path adds the rows of binary input events
_forced_adder: str | None = None


def force_adder(name: str | None) -> None:
    """Add binary events with ``name`` from now on (None: the default); both adders run on any host."""
    if name not in (None, *ADDERS):
        raise ValueError(f"no spiking event adder {name!r}; choose one of {ADDERS} (or None for the default)")
    global _forced_adder
    _forced_adder = name


@functools.cache
def _default_adder() -> str:
    import os

    name = os.environ.get("EDGERT_SPIKING_ADDER")  # read once
    if name and name not in ADDERS:
        raise ValueError(f"EDGERT_SPIKING_ADDER={name!r} names no spiking event adder; choose one of {ADDERS}")
    return name or ("blocked" if host_isa() in ("avx512f", "avx2") else "step")


def adder() -> str:
    """The event adder in use: forced, else $EDGERT_SPIKING_ADDER, else "blocked" on x86 hosts with AVX2 or
    AVX-512 and "step" elsewhere (not measured there). On a Sapphire Rapids-class Xeon the SHD run took 51
    us blocked and 65 step; compiled for AVX2 (haswell) with the row blocks of a 32 KB L1, 56 and 75."""
    return _forced_adder or _default_adder()


def adder_description(name: str) -> str:
    """What adder ``name`` does, for bench tables."""
    if name == "blocked":
        return (f"binary events added blocked: one {BLOCK_LANES}-output span (a zmm per row) of a row block (up to "
                f"{block_rows(1 << 20)} inputs, for a {l1_data_bytes() >> 10} KB L1) kept in L1 while {BLOCK_STEPS} "
                "sample-steps at a time add their events")
    return (f"spike rows added step by step in register spans of {SPAN} x <{LANES} x float> with the row "
            f"{PREFETCH} events ahead prefetched and a masked last vector")


def describe() -> str:
    """The spiking kernels' variant on this host, for bench tables."""
    import llvmlite.binding as llvm

    return (f"Numba for {llvm.get_host_cpu_name()} ({host_isa()}); event path: one call per layer over all steps, "
            f"events listed by {LANES}-lane compare masks, {adder_description(adder())}; dense path: one BLAS "
            "matmul over all steps; Leaky update vectorized")


def codes(node) -> tuple[int, bool, int, np.float32]:
    """Kernel arguments (mode, delay, instant, graded) of a neuron node (a str-valued Reset hashes as its
    string, so the node's validated strings index RESET_CODE without building the Enum each call)."""
    return RESET_CODE[node.reset], bool(node.reset_delay), RESET_CODE[node.instant_reset], _F(node.graded)
