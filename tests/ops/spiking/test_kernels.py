"""Spiking kernels against their NumPy references, and the references against hand-computed cases."""

import numpy as np
import pytest

from edgert.ops.spiking import kernels as K
from edgert.ops.spiking.nodes import Delay, Leaky, LeakyIntegrator, LinearLeaky, RLeaky, RSynaptic, Synaptic
from edgert.ops.spiking.run import SEQUENCES

RNG = np.random.default_rng(0)
F = np.float32


def test_leaky_reference_by_hand():
    node = Leaky(name="n", inputs=("x", "b", "t"), output="y")
    beta, thr = np.array([0.5], F), np.array([1.0], F)
    mem = np.zeros((1, 1), F)
    trace = []
    for cur in (0.8, 0.8, 0.0, 0.0):
        spk, mem = K.leaky_step_ref(np.array([[cur]], F), beta, thr, mem, node)
        trace += [float(spk[0, 0]), float(mem[0, 0])]
    # U: 0.8, 0.5*0.8+0.8=1.2 (spike), then the delayed reset: 0.5*1.2 + 0 - 1 = -0.4, then -0.2
    assert trace == pytest.approx([0, 0.8, 1, 1.2, 0, -0.4, 0, -0.2])


def test_zero_reset_differs_by_class():
    thr, one = np.array([1.0], F), np.array([1.0], F)
    mem = np.array([[1.5]], F)  # above threshold: this step resets
    cur = np.array([[0.25]], F)
    _, leaky = K.leaky_step_ref(cur, np.array([0.5], F), thr, mem,
                                Leaky(name="n", inputs=("x", "b", "t"), output="y", reset="zero"))
    _, syn, synaptic = K.synaptic_step_ref(cur, one * 0.5, np.array([0.5], F), thr, np.array([[2.0]], F), mem,
                                           Synaptic(name="s", inputs=("x", "a", "b", "t"), output="y", reset="zero"))
    assert leaky[0, 0] == pytest.approx(0.25)  # old membrane zeroed, the input still added
    assert synaptic[0, 0] == 0.0 and syn[0, 0] == pytest.approx(1.25)  # whole state zeroed; current kept


def _node(cls, **kw):
    n = {Leaky: 3, Synaptic: 4, RLeaky: 4, RSynaptic: 6, LinearLeaky: 5}[cls] + (1 if kw.get("all_to_all") else 0)
    return cls(name="n", inputs=tuple(f"i{k}" for k in range(n)), output="y", **kw)


VARIANTS = [dict(), dict(reset="zero"), dict(reset="none"), dict(reset_delay=False),
            dict(reset="zero", reset_delay=False), dict(graded=0.5), dict(reset="subtract", instant_reset="zero",
                                                                           reset_delay=False)]


def _dyadic(shape, scale=1.0):
    """Values on a 1/64 grid: float32 sums are exact in any order, so kernel and reference agree exactly."""
    return (RNG.integers(-64, 65, shape) / 64 * scale).astype(F)


def _run_ref(step, node, xs, *params, n_state=1):
    state = [np.zeros(xs.shape[1:2] + (params[-1].shape[0],), F) for _ in range(n_state)]
    outs = []
    for x in xs:
        spk, *state = step(x, *params, *state, node)
        outs.append(spk)
    return np.stack(outs), state


@pytest.mark.parametrize("kw", VARIANTS)
@pytest.mark.parametrize("batch,n", [(1, 1), (3, 7)])
def test_leaky_kernel_matches_reference(kw, batch, n):
    node = _node(Leaky, **kw)
    cur = _dyadic((20, batch, n), 1.5)
    beta, thr = np.full(n, 0.5, F), (RNG.integers(16, 80, n) / 64).astype(F)
    want, (mem,) = _run_ref(K.leaky_step_ref, node, cur, beta, thr)
    state = {}
    got = SEQUENCES["leaky"](node, [cur, beta, thr], state)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state["mem"], mem)
    assert state["spikes"] == np.count_nonzero(want) and state["samples"] == 20 * batch


@pytest.mark.parametrize("kw", VARIANTS)
def test_synaptic_kernel_matches_reference(kw):
    node = _node(Synaptic, **kw)
    cur = _dyadic((20, 3, 5))
    alpha, beta, thr = np.full(5, 0.5, F), np.full(5, 0.75, F), np.full(5, 1.0, F)
    outs, syn, mem = [], np.zeros((3, 5), F), np.zeros((3, 5), F)
    for x in cur:
        spk, syn, mem = K.synaptic_step_ref(x, alpha, beta, thr, syn, mem, node)
        outs.append(spk)
    state = {}
    np.testing.assert_array_equal(SEQUENCES["synaptic"](node, [cur, alpha, beta, thr], state), np.stack(outs))
    np.testing.assert_array_equal(state["syn"], syn)
    np.testing.assert_array_equal(state["mem"], mem)


@pytest.mark.parametrize("all_to_all", [True, False])
@pytest.mark.parametrize("kw", VARIANTS[:4])
def test_rleaky_kernel_matches_reference(all_to_all, kw):
    node = _node(RLeaky, all_to_all=all_to_all, **kw)
    n = 6
    cur = _dyadic((20, 2, n))
    beta, thr = np.full(n, 0.5, F), np.full(n, 0.75, F)
    rec = (_dyadic((n, n)), _dyadic(n, 0.25)) if all_to_all else (_dyadic(n),)
    outs, spk, mem = [], np.zeros((2, n), F), np.zeros((2, n), F)
    for x in cur:
        spk, mem = K.rleaky_step_ref(x, beta, thr, rec, spk, mem, node)
        outs.append(spk)
    got = SEQUENCES["rleaky"](node, [cur, beta, thr, *rec], {})
    np.testing.assert_array_equal(got, np.stack(outs))


def test_leaky_integrator_and_delay_kernels_match_reference():
    li = LeakyIntegrator(name="n", inputs=("x", "b", "s"), output="y")
    cur = _dyadic((20, 2, 5))
    beta, scale = np.full(5, 0.5, F), np.full(5, 0.25, F)  # dyadic: exact in float32
    mem, want = np.zeros((2, 5), F), []
    for x in cur:
        mem = K.leaky_integrator_step_ref(x, beta, scale, mem, li)
        want.append(mem)
    state = {}
    np.testing.assert_array_equal(SEQUENCES["leaky_integrator"](li, [cur, beta, scale], state), np.stack(want))
    assert "samples" not in state  # not a spiking layer: no spike counts
    delay = Delay(name="d", inputs=("x",), output="y", steps=3)
    state = {}
    first = SEQUENCES["delay"](delay, [cur[:7]], state)  # two calls: the ring carries across them
    got = np.concatenate([first, SEQUENCES["delay"](delay, [cur[7:]], state)])
    np.testing.assert_array_equal(got[:3], 0)
    np.testing.assert_array_equal(got[3:], cur[:-3])
    buf, ref = np.zeros((3, 2, 5), F), []
    for x in cur:
        y, buf = K.delay_step_ref(x, buf, delay)
        ref.append(y)
    np.testing.assert_array_equal(got, np.stack(ref))


@pytest.mark.parametrize("kw", VARIANTS)
def test_rsynaptic_kernel_matches_reference(kw):
    node = _node(RSynaptic, **kw)
    n = 6
    cur = _dyadic((20, 2, n))
    alpha, beta, thr = np.full(n, 0.5, F), np.full(n, 0.75, F), np.full(n, 0.75, F)
    w, b = _dyadic((n, n)), _dyadic(n, 0.25)
    outs, spk, syn, mem = [], np.zeros((2, n), F), np.zeros((2, n), F), np.zeros((2, n), F)
    for x in cur:
        spk, syn, mem = K.rsynaptic_step_ref(x, alpha, beta, thr, w, b, spk, syn, mem, node)
        outs.append(spk)
    state = {}
    got = SEQUENCES["rsynaptic"](node, [cur, alpha, beta, thr, w, b], state)
    assert 0 < np.count_nonzero(got) < got.size
    np.testing.assert_array_equal(got, np.stack(outs))
    np.testing.assert_array_equal(state["syn"], syn)
    np.testing.assert_array_equal(state["mem"], mem)


@pytest.mark.parametrize("density, below", [(0.05, 0.15), (0.9, 0.15), (0.05, 0.0)])  # event, dense, forced dense
@pytest.mark.parametrize("k,o", [(1, 1), (37, 11), (53, 77)])  # 77: a span of 64, a vector, a masked 5
def test_linear_leaky_kernel_matches_reference(density, below, k, o):
    node = _node(LinearLeaky, event_below=below)
    x = (RNG.random((25, 4, k)) < density).astype(F)
    wt, bias = _dyadic((k, o), 0.5), _dyadic(o, 0.25)
    beta, thr = np.full(o, 0.75, F), np.full(o, 0.5, F)
    want, (mem,) = _run_ref(K.linear_leaky_step_ref, node, x, wt, bias, beta, thr)
    state = {}
    got = SEQUENCES["linear_leaky"](node, [x, wt, bias, beta, thr], state)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state["mem"], mem)
    assert state["path"] == ("event" if np.count_nonzero(x) < node.event_below * x.size else "dense")
    assert state["synops"] == np.count_nonzero(x) * o


@pytest.mark.parametrize("t,b,k,o", [(7, 1, 1, 1), (7, 3, 7, 16), (9, 2, 64, 20), (5, 4, 255, 33), (6, 1, 256, 16),
                                     (4, 5, 257, 77), (50, 3, 300, 256), (3, 2, 700, 256),
                                     (5, 2, 1500, 40)])
def test_blocked_and_step_adders_agree_bit_for_bit(t, b, k, o):
    """The blocked adder (row blocks of the host's size and of 64 inputs, groups of 4 sample-steps, tiles
    of sample-steps: 50 x 3 at 256 outputs spans two tiles, split inside a time step; 1500 inputs are
    several host-sized blocks) against the step-by-step adder, bit for bit
    with float weights, and against the reference with weights on a 1/64 grid (float32 sums exact in any
    order). Both run on any host (LLVM splits the zmm vectors where there are none)."""
    node = _node(LinearLeaky)
    rng = np.random.default_rng(k + o)
    x = (rng.random((t, b, k)) < 0.3).astype(F)
    x[0, 0, : k // 2] = -0.0  # no events
    beta, thr = np.full(o, 0.75, F), np.full(o, 0.5, F)
    exact = (_dyadic((k, o), 0.5), _dyadic(o, 0.25))
    for wt, bias in (exact, (rng.standard_normal((k, o)).astype(F) * F(0.3), rng.standard_normal(o).astype(F))):
        runs = []
        for blocks in (K.block_weights(wt, bias), K.block_weights(wt, bias, 64), K.NO_BLOCKS):
            out, mem = np.empty((t, b, o), F), np.zeros((b, o), F)
            events, spikes = K.linear_leaky_events(x, wt, bias, *blocks, beta, thr, mem, out, x.size, *K.codes(node))
            assert events == np.count_nonzero(x) and spikes == np.count_nonzero(out)
            runs.append((out, mem))
        for out, mem in runs[1:]:
            np.testing.assert_array_equal(runs[0][0], out)
            np.testing.assert_array_equal(runs[0][1].view(np.uint32), mem.view(np.uint32))
        if wt is exact[0]:
            want, (mem,) = _run_ref(K.linear_leaky_step_ref, node, x, wt, bias, beta, thr)
            np.testing.assert_array_equal(runs[0][0], want)
            np.testing.assert_array_equal(runs[0][1], mem)


@pytest.mark.parametrize("adder", K.ADDERS)
def test_each_adder_runs_the_fused_layer_as_the_reference(adder):
    """Forced, either adder takes the event path (the prepared weights follow the adder) and matches the
    reference; an unknown adder is refused with the choices."""
    node = _node(LinearLeaky, event_below=0.5)
    x = (RNG.random((30, 2, 150)) < 0.1).astype(F)
    wt, bias = _dyadic((150, 40), 0.5), _dyadic(40, 0.25)
    beta, thr = np.full(40, 0.75, F), np.full(40, 0.5, F)
    want, (mem,) = _run_ref(K.linear_leaky_step_ref, node, x, wt, bias, beta, thr)
    K.force_adder(adder)
    try:
        state = {}
        got = SEQUENCES["linear_leaky"](node, [x, wt, bias, beta, thr], state)
        assert K.adder() == adder and state["path"] == "event"
        from edgert.ops.spiking.run import _prepare
        assert (_prepare(node, wt, bias, beta, thr)[2].shape[0] > 0) == (adder == "blocked")
    finally:
        K.force_adder(None)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state["mem"], mem)
    with pytest.raises(ValueError, match="choose one of"):
        K.force_adder("fast")


@pytest.mark.parametrize("l1, k, rows", [(48 << 10, 700, 704), (48 << 10, 1500, 512), (32 << 10, 700, 384),
                                         (32 << 10, 448, 448), (48 << 10, 1, 64), (1 << 10, 700, 64)])
def test_row_blocks_are_equal_multiples_of_64_within_l1(monkeypatch, l1, k, rows):
    """Blocks hold at most 15/16 of L1 in 64-byte rows: 48 KB takes 704 rows, 32 KB 448; k is split in
    equal blocks rounded up to 64 (1500 = 3 x 500 -> 512, 700 = 2 x 350 -> 384)."""
    monkeypatch.setattr(K, "l1_data_bytes", lambda: l1)
    assert K.block_rows(k) == rows


def test_blocked_adder_hands_graded_nan_and_dense_input_to_the_step_path():
    node = _node(LinearLeaky)
    x = (RNG.random((8, 2, 40)) < 0.2).astype(F)
    wt, bias, beta, thr = _dyadic((40, 20)), _dyadic(20), np.full(20, 0.75, F), np.full(20, 0.5, F)
    blocks = K.block_weights(wt, bias)
    graded = x * F(0.5)
    want, (want_mem,) = _run_ref(K.linear_leaky_step_ref, node, graded, wt, bias, beta, thr)
    out, mem = np.empty((8, 2, 20), F), np.zeros((2, 20), F)
    assert K.linear_leaky_events(graded, wt, bias, *blocks, beta, thr, mem, out, x.size, *K.codes(node))[0] > 0
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(mem, want_mem)
    bad = x.copy()
    bad[7, 1, 39] = np.nan
    out[...] = 7.0
    assert K.linear_leaky_events(bad, wt, bias, *blocks, beta, thr, mem, out, x.size, *K.codes(node)) == (-1, 0)
    most = np.count_nonzero(x) // 2
    events, spikes = K.linear_leaky_events(x, wt, bias, *blocks, beta, thr, mem, out, most, *K.codes(node))
    assert events > most and spikes == 0 and (out == 7.0).all()
    np.testing.assert_array_equal(mem, want_mem)


def test_linear_leaky_events_graded_input_against_float64_reference():
    """Graded (non-binary) input values multiply their rows; the float32 sums differ from the float64
    reference in the last bits only (this seed flips no spike)."""
    node = _node(LinearLeaky)
    rng = np.random.default_rng(5)
    x = (rng.random((30, 3, 50)) < 0.2).astype(F) * rng.standard_normal((30, 3, 50)).astype(F)
    wt, bias = rng.standard_normal((50, 9)).astype(F), rng.standard_normal(9).astype(F)
    beta, thr = np.full(9, 0.8, F), np.full(9, 1.0, F)
    want, (mem,) = _run_ref(K.linear_leaky_step_ref, node, x, wt, bias, beta, thr)
    out, got_mem = np.empty((30, 3, 9), F), np.zeros((3, 9), F)
    events, spikes = K.linear_leaky_events(x, wt, bias, *K.NO_BLOCKS, beta, thr, got_mem, out, x.size, *K.codes(node))
    assert events == np.count_nonzero(x) and spikes == np.count_nonzero(out) > 0
    np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(got_mem, mem, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("density", [0.05, 0.9])  # event path, dense path
def test_linear_leaky_refuses_nan_and_inf_before_changing_state(density):
    from edgert.runtime.kernels import NonFinite

    node = _node(LinearLeaky)
    x = (RNG.random((10, 2, 40)) < density).astype(F)
    wt, bias, beta, thr = _dyadic((40, 6)), _dyadic(6), np.full(6, 0.75, F), np.full(6, 0.5, F)
    state = {}
    SEQUENCES["linear_leaky"](node, [x, wt, bias, beta, thr], state)
    mem = state["mem"].copy()
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[9, 1, 39] = bad  # the very last value
        with pytest.raises(NonFinite, match=r"the input of 'n' holds NaN or Inf"):  # an EdgertError
            SEQUENCES["linear_leaky"](node, [xb, wt, bias, beta, thr], state)
        np.testing.assert_array_equal(state["mem"], mem)
    if density < 0.15:
        out = np.full((10, 2, 6), 7.0, F)
        assert K.linear_leaky_events(xb, wt, bias, *K.NO_BLOCKS, beta, thr, state["mem"], out, x.size,
                                     *K.codes(node)) == (-1, 0)
        assert (out == 7.0).all()


@pytest.mark.parametrize("k", [1, 7, 8, 63, 64, 65, 130, 700])  # masks of 64, of 8, and one by one
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_event_lists_match_reference(k, density):
    rng = np.random.default_rng(k)
    x = (rng.random((6, 2, k)) < density).astype(F) * rng.choice(np.array([1, -2.5, 0.25], F), (6, 2, k))
    x[0, 0, :: 3] = -0.0  # a negative zero is no event
    idx, val, ptr = np.empty(x.size + k, np.int64), np.empty(x.size + k, F), np.empty(13, np.int64)
    n = K.events(x, x.view(np.uint32), idx, val, ptr, x.size)
    assert n == np.count_nonzero(x) == ptr[12]
    for s in range(12):
        want_idx, want_val = K.events_ref(x[s // 2, s % 2])
        np.testing.assert_array_equal(idx[ptr[s]:ptr[s + 1]], want_idx)
        np.testing.assert_array_equal(val[ptr[s]:ptr[s + 1]], want_val)


@pytest.mark.parametrize("most, listed", [(25, 30), (40, 40), (0, 10)])
def test_event_lists_stop_past_the_limit_and_stay_in_their_room(most, listed):
    """The lists get exactly the room the docstring asks; a sentinel past it must survive (the kernel
    writes by index without bounds checks)."""
    x = np.ones((4, 1, 10), F)
    room = min(most + 10, x.size)
    idx, val = np.full(room + 16, -7, np.int64), np.full(room + 16, -7.0, F)
    assert K.events(x, x.view(np.uint32), idx[:room], val[:room], np.empty(5, np.int64), most) == listed
    assert (idx[room:] == -7).all() and (val[room:] == -7.0).all()


def test_event_lists_refuse_too_little_room():
    x = np.ones((4, 1, 10), F)
    with pytest.raises(ValueError, match="need room"):
        K.events(x, x.view(np.uint32), np.empty(35, np.int64), np.empty(35, F), np.empty(5, np.int64), 40)
    with pytest.raises(ValueError, match="most must be >= 0"):
        K.events(x, x.view(np.uint32), np.empty(40, np.int64), np.empty(40, F), np.empty(5, np.int64), -1)


def test_node_checks_name_the_fix():
    from edgert.errors import IRValidationError

    with pytest.raises(IRValidationError, match="valid values are"):
        _node(Leaky, reset="hard")
    with pytest.raises(IRValidationError, match="graded spike factor"):
        _node(Leaky, graded=0.0)


def test_blocked_lists_skip_negative_zero_in_a_row_tail():
    """-0.0 is no event, in the last inputs of a row too (past the whole masks of 64 and of 8): the
    blocked lists count only the 1.0s, so the input stays on the blocked path."""
    x = np.zeros((4, 1, 70), F)
    x[:, 0, 66:] = -0.0
    x[:, 0, [3, 65, 69]] = 1.0
    pidx, boff, blen = np.empty(4 * 4 * 70, np.int32), np.empty((1, 1), np.int64), np.empty((1, 1), np.int64)
    assert K._block_lists(x.reshape(4, 70).view(np.uint32), x.size, 128, pidx, boff, blen) == (12, True)
    assert blen[0, 0] == 3
