"""ScheduleCPU: fixed, untuned loop schedules for the PrimFuncs edgert's TVM lowering emits.

TVM 0.27's CPU pipeline leaves TE loops as written: one thread, no register blocking, so a 3x3
convolution runs at about 1 GMAC/s. This pass applies a few hand-written s_tir schedules:

- convolution with packed weights (``conv2d_packed``, see tvm_lower): a register tile of up to 12
  output columns x one vector of output channels; each input value is broadcast and multiplied by
  a contiguous vector of weights; (batch, channel block, row) run in parallel;
- convolutions with a channel-blocked output (``conv2d_blocked``, ``depthwise_blocked``; see
  tvm_lower.blocked_values): the same tile, stored as whole vectors; a depthwise tap is one vector
  multiply of lanes channels; the zero padding is written row by row;
- other convolutions (``conv2d_nchw`` / ``group_conv2d_nchw``: depthwise, odd channel counts): a
  tile of a few output channels x a vector of output columns, weights broadcast;
- both keep the tile in registers, move the reduction outside the vector loop and inline the fused
  epilogue (bias, batch norm, activation) into the tile's write-back;
- dense (``matmul`` block, ``y = x @ w.T``): split the contiguous K axis into vector lanes, rfactor
  the lanes into a vector of partial sums, parallel over output features;
- everything else: inline elementwise chains, parallelize the outer data-parallel loops, and
  vectorize a short contiguous innermost loop.

A schedule primitive that rejects a function (TVM checks every step) leaves that function unscheduled:
still correct, only slower. Set ``EDGERT_TVM_STRICT_SCHEDULE=1`` to raise instead (the tests do).
"""

from __future__ import annotations

import logging
import os

from edgert._tvm import import_tvm
from edgert.compilers.backends.cpu_tiles import conv_tile_columns

tvm = import_tvm()
from tvm import s_tir, tirx  # noqa: E402

log = logging.getLogger(__name__)

CONV_BLOCKS = ("conv2d_nchw", "group_conv2d_nchw")  # topi's names; weights broadcast
PACKED_CONV_BLOCKS = ("conv2d_packed",)  # tvm_lower.conv2d_packed_te; weights packed per lanes
BLOCKED_CONV_BLOCKS = ("conv2d_blocked", "depthwise_blocked")  # channel-blocked outputs, see tvm_lower
DENSE_BLOCKS = ("matmul",)
PARALLEL_MIN_WORK = 1 << 14  # below this many loop iterations a thread hand-off costs more than it saves
# Scope of register tiles. TVM 0.27's LowerTVMBuiltin turns every "local" buffer on CPU into a
# TVMBackendAllocWorkspace heap call (only small "global" buffers become stack allocas), and LLVM
# then cannot keep the tile in registers: a 3x3 conv ran 2.5-3x slower. Compacted "global" works.
TILE_SCOPE = "global"


def lanes_for(target) -> int:
    """float32 lanes of one vector register: 8 on x86 (AVX2), 4 on ARM (NEON)."""
    triple = str(target.attrs.get("mtriple", "")) if target is not None else ""
    return 4 if triple.startswith(("arm", "aarch64", "thumb")) else 8


def _const(e) -> int | None:
    return int(e.value) if isinstance(e, tirx.IntImm) else None


def _is_reduction(sch, block) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _name(sch, block) -> str:
    return sch.get(block).name_hint


def _matches(name: str, bases: tuple[str, ...]) -> bool:
    """FuseTIR may suffix block names (``conv2d_nchw_1``); match the base name."""
    return any(name == b or (name.startswith(b + "_") and name[len(b) + 1:].isdigit()) for b in bases)


def _is_copy(sch, block) -> bool:
    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, tvm.ir.TensorLoad)


def _work(sch, block) -> int | None:
    """Iterations of the block's loop nest (None when a loop is symbolic: assume it is large)."""
    total = 1
    for loop in sch.get_loops(block):
        e = _const(sch.get(loop).extent)
        if e is None:
            return None
        total *= e
    return total


def _parallel_outer(sch, block, keep_inner: int = 0) -> None:
    """Fuse the leading data-parallel loops of ``block`` (all but ``keep_inner``) and parallelize."""
    w = _work(sch, block)
    if w is not None and w < PARALLEL_MIN_WORK:
        return
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    n_spatial = 0
    for k in kinds:
        if k != tirx.IterVar.DataPar:
            break
        n_spatial += 1
    if len(loops) != len(kinds):  # loops were already transformed; leave them
        return
    outer = loops[:max(0, n_spatial - keep_inner)]
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _schedule_elementwise(sch, block, lanes: int) -> None:
    """Parallel over all but the innermost loop; vectorize the innermost when short and static.

    The innermost loop stays out of the parallel fused loop even when it is not vectorized: fused,
    every element recovers its indices by division (a stride-2 conv's zero padding of 3x98x98 took
    150 us that way, 30 us as rows)."""
    loops = sch.get_loops(block)
    inner = _const(sch.get(loops[-1]).extent)
    vec = len(loops) > 1 and inner is not None and inner <= 8 * lanes
    _parallel_outer(sch, block, keep_inner=1 if len(loops) > 1 else 0)
    if vec:
        sch.vectorize(sch.get_loops(block)[-1])


def _fold_epilogue(sch, wb) -> None:
    """Inline the elementwise chain after a write-back block (bias, batch norm, activation) into it."""
    while True:
        consumers = sch.get_consumers(wb)
        if len(consumers) != 1 or _is_reduction(sch, consumers[0]):
            return
        sch.reverse_compute_inline(consumers[0])


def _schedule_conv_oc(sch, conv, lanes: int) -> None:
    """Vectorize over output channels (``conv2d_packed``: weights already [O/lanes, I, kh, kw, lanes]):
    a register tile of ``owb`` output columns x ``lanes`` channels, input values broadcast."""
    n, oc, oh, ow, rc, ry, rx = sch.get_loops(conv)
    owb = conv_tile_columns(_const(sch.get(ow).extent))
    # a short row leaves too few accumulators to hide the FMA latency: take two vectors of channels
    ocb = 2 if 2 * owb <= 12 and _const(sch.get(oc).extent) % (2 * lanes) == 0 else 1
    acc = sch.cache_write(conv, 0, TILE_SCOPE)
    _fold_epilogue(sch, acc)
    oc_o, oc_b, oc_i = sch.split(oc, [None, ocb, lanes])
    ow_o, ow_i = sch.split(ow, [None, owb])
    sch.reorder(n, oc_o, oh, ow_o, rc, ry, rx, ow_i, oc_b, oc_i)
    sch.reverse_compute_at(acc, ow_o, preserve_unit_loops=True)
    # the tile as [columns, lanes] so each column's accumulator is one vector
    sch.transform_layout(conv, ("write", 0), lambda b, o, h, w: (b, o // lanes, h, w, o % lanes))
    # parallel and vectorize before decompose_reduction: TVM's checks want the init still in place
    sch.parallel(sch.fuse(n, oc_o, oh))
    sch.unroll(ow_i)
    sch.unroll(oc_b)
    sch.vectorize(oc_i)
    for loop in sch.get_loops(acc)[-4:]:  # constant indices let LLVM keep the tile in registers
        sch.unroll(loop)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_conv_blocked(sch, conv, lanes: int) -> None:
    """A conv whose output is channel-blocked [N, C/lanes, H, W, lanes] (``conv2d_blocked``, or
    ``depthwise_blocked`` without the channel reduction): a register tile of ``owb`` output columns x
    ``ocb`` vectors of channels, stored as whole vectors."""
    loops = sch.get_loops(conv)
    n, oo, oh, ow, oi = loops[:5]
    reduction = loops[5:]
    for pad in sch.get_producers(conv):  # the zero padding, row by row: no index division per vector
        if not _is_reduction(sch, pad) and len(sch.get_loops(pad)) == 5:
            p_n, p_c, p_h, _, p_lane = sch.get_loops(pad)
            sch.parallel(sch.fuse(p_n, p_c, p_h))
            sch.vectorize(p_lane)
    owb = conv_tile_columns(_const(sch.get(ow).extent))
    ocb = 2 if 2 * owb <= 12 and _const(sch.get(oo).extent) % 2 == 0 else 1
    acc = sch.cache_write(conv, 0, TILE_SCOPE)
    _fold_epilogue(sch, acc)
    oo_o, oo_b = sch.split(oo, [None, ocb])
    ow_o, ow_i = sch.split(ow, [None, owb])
    sch.reorder(n, oo_o, oh, ow_o, *reduction, ow_i, oo_b, oi)
    sch.reverse_compute_at(acc, ow_o, preserve_unit_loops=True)
    # parallel and vectorize before decompose_reduction: TVM's checks want the init still in place
    sch.parallel(sch.fuse(n, oo_o, oh))
    sch.unroll(ow_i)
    sch.unroll(oo_b)
    sch.vectorize(oi)
    *outer, lane = sch.get_loops(acc)[-5:]
    for loop in outer:  # constant indices let LLVM keep the tile in registers
        sch.unroll(loop)
    sch.vectorize(lane)
    init = sch.decompose_reduction(conv, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])


def _split_column_phases(sch, conv) -> None:
    """A conv with column stride s reads every s-th column of its padded input: as a vector of output
    columns that is a gather of single floats. Store the padding block's output as s planes of
    columns instead (column w at [w % s, w // s]): each tap then reads one contiguous vector."""
    pads = [p for p in sch.get_producers(conv) if not _is_reduction(sch, p)]
    if len(pads) != 1:
        return  # reads the function's input directly (no padding): nothing of ours to re-lay
    buf = sch.get(pads[0]).writes[0].source
    region = next((r for r in sch.get(conv).reads if r.source.same_as(buf)), None)
    width = _const(buf.shape[-1])
    if region is None or width is None or len(buf.shape) != 4:
        return
    column = sch.get(conv).iter_vars[3].var
    coeff = tvm.sym.detect_linear_equation(region.region[-1].min, [column])
    stride = _const(coeff[0]) if len(coeff) == 2 else None
    if stride is None or stride < 2 or width % stride:
        return
    phases = lambda b, c, h, w: (b, c, h, w % stride, w // stride)  # noqa: E731
    sch.transform_layout(pads[0], ("write", 0), phases)
    sch.transform_block_layout(pads[0], phases)  # the padding writes each plane's row in order


def _schedule_conv_ow(sch, conv, lanes: int) -> None:
    """Vectorize over output columns (depthwise convs, odd channel counts): weights broadcast."""
    _split_column_phases(sch, conv)
    n, oc, oh, ow, rc, ry, rx = sch.get_loops(conv)
    n_oc, n_ow = _const(sch.get(oc).extent), _const(sch.get(ow).extent)
    vw = next((v for v in (2 * lanes, lanes) if n_ow % v == 0), n_ow if n_ow <= 4 * lanes else None)
    if vw is None:
        vw = lanes  # a ragged last tile: correct, but TVM cannot vectorize it
    regs = -(-vw // lanes)
    ocb = next(b for b in (8, 4, 2, 1) if n_oc % b == 0 and b * regs <= 8)
    oc_o, oc_i = sch.split(oc, [None, ocb])
    ow_o, ow_i = sch.split(ow, [None, vw])
    sch.reorder(n, oc_o, oh, ow_o, rc, ry, rx, oc_i, ow_i)
    acc = sch.cache_write(conv, 0, TILE_SCOPE)
    _fold_epilogue(sch, acc)
    sch.reverse_compute_at(acc, ow_o, preserve_unit_loops=True)
    # parallel and vectorize before decompose_reduction: TVM's checks want the init still in place
    sch.parallel(sch.fuse(n, oc_o, oh))
    sch.unroll(oc_i)
    for loop in sch.get_loops(acc)[-4:-1]:  # constant indices let LLVM keep the tile in registers
        sch.unroll(loop)
    vector = n_ow % vw == 0
    if vector:
        sch.vectorize(ow_i)
        sch.vectorize(sch.get_loops(acc)[-1])
    init = sch.decompose_reduction(conv, rc)
    if vector:
        sch.vectorize(sch.get_loops(init)[-1])


def _schedule_dense(sch, mm, lanes: int) -> None:
    *spatial, k = sch.get_loops(mm)
    n_k = _const(sch.get(k).extent)
    if n_k is None or n_k % lanes or n_k < 2 * lanes:
        _parallel_outer(sch, mm)
        return
    w = _work(sch, mm)
    _, k_i = sch.split(k, [None, lanes])
    rf = sch.rfactor(k_i, factor_axis=0)  # rf[lane, ...] = partial sums over k_o, one per lane
    sch.compute_at(rf, spatial[-1])
    k_i_rf, k_o_rf = sch.get_loops(rf)[-2:]  # rfactor puts the lane loop outside
    sch.reorder(k_o_rf, k_i_rf)
    # parallel before decompose_reduction: TVM's checks want reduction blocks that still have init
    if w is None or w >= PARALLEL_MIN_WORK:
        sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
    sch.vectorize(k_i_rf)
    init = sch.decompose_reduction(rf, k_o_rf)
    sch.vectorize(sch.get_loops(init)[-1])


def schedule_func(func: "tirx.PrimFunc", lanes: int) -> "tirx.PrimFunc":
    """One PrimFunc, scheduled (raises a TVM error when a primitive does not apply)."""
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    blocks = list(sch.get_child_blocks(root))
    # inline pure-copy producers (a zero-padding conv's pad_temp) and elementwise middles of chains
    for b in blocks[:-1]:
        consumers = sch.get_consumers(b)
        if _is_reduction(sch, b) or not consumers:
            continue
        feeds_reduction = any(_is_reduction(sch, c) for c in consumers)
        if feeds_reduction and not _is_copy(sch, b):
            continue  # a padding block: computing it once beats re-testing bounds in the inner loop
        sch.compute_inline(b)
    handled = set()
    for name in [_name(sch, b) for b in sch.get_child_blocks(root)]:
        if not any(_name(sch, b) == name for b in sch.get_child_blocks(root)):
            continue  # inlined into an earlier block's schedule
        b = sch.get_sblock(name)
        if _matches(name, BLOCKED_CONV_BLOCKS):
            _schedule_conv_blocked(sch, b, lanes)
            handled.add(name)
        elif _matches(name, PACKED_CONV_BLOCKS) and len(sch.get_loops(b)) == 7:
            _schedule_conv_oc(sch, b, lanes)
            handled.add(name)
        elif _matches(name, CONV_BLOCKS) and len(sch.get_loops(b)) == 7:
            _schedule_conv_ow(sch, b, lanes)
            handled.add(name)
        elif _matches(name, DENSE_BLOCKS):
            _schedule_dense(sch, b, lanes)
            handled.add(name)
    for b in sch.get_child_blocks(root):
        loops = sch.get_loops(b)
        if _name(sch, b) in handled or not loops or len(sch.get_child_blocks(loops[0])) != 1:
            continue  # scheduled above, or sharing a loop nest with blocks scheduled above
        if len(loops) != len(sch.get(b).iter_vars):
            continue
        if _is_reduction(sch, b):
            _parallel_outer(sch, b)
        else:
            _schedule_elementwise(sch, b, lanes)
    return sch.mod["main"]


def schedule_cpu() -> "tvm.transform.Pass":
    """The module pass: schedule every unscheduled PrimFunc; on failure keep it as written."""
    strict = os.environ.get("EDGERT_TVM_STRICT_SCHEDULE") == "1"

    @tvm.transform.module_pass(opt_level=0, name="ScheduleCPU")
    def _pass(mod, _ctx):
        lanes = lanes_for(tvm.target.Target.current(allow_none=True))
        updates = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            try:
                updates[gv] = schedule_func(func, lanes).with_attr("tirx.is_scheduled", True)
            except Exception as e:  # TVM's schedule errors; the function stays correct unscheduled
                if strict:
                    raise
                log.debug("ScheduleCPU left %s unscheduled: %s", gv.name_hint, e)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
