"""MST channel reuse (MST-compression, ICCV 2023): compute an output channel from an already computed one.

With packed weights ``w_i`` and ``w_j`` of two output channels, the popcount sums over a reduction of
words satisfy, word by word, ``acc_j = acc_i + sum_d popcount(x_d ^ w_j,d) - popcount(x_d ^ w_i,d)``
over only the words ``d`` where ``w_i,d != w_j,d``. A minimum spanning tree over channels with
word-level Hamming distances minimizes the words touched; rooting it at its centre minimizes the
depth (the chain of dependencies). A CPU skips whole words, never single bits, so the schedule is
kept only where it saves word-level work.

The schedule is four int32 arrays: ``order`` (channels, parents first), ``parent`` (-1: computed in
full), and the differing words of each channel in CSR form (``diff_ptr`` [O + 1], ``diff_idx``),
word indices into the flattened (kh, kw, words) reduction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numba
import numpy as np

from edgert.ops.binary.bits import popcount


def hamming_bits(w: np.ndarray) -> np.ndarray:
    """[O, O] bit-level Hamming distances between rows of packed weights (any trailing shape)."""
    rows = w.reshape(w.shape[0], -1)
    by = np.ascontiguousarray(rows).view(np.uint8)
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    return np.array([table[by ^ by[i]].sum(1) for i in range(len(by))], np.int64)


def hamming_words(w: np.ndarray) -> np.ndarray:
    """[O, O] number of differing 64-bit words between rows of packed weights."""
    rows = w.reshape(w.shape[0], -1)
    return (rows[:, None, :] != rows[None, :, :]).sum(-1).astype(np.int64)


def min_spanning_tree(dist: np.ndarray) -> list[tuple[int, int]]:
    """Edges of a minimum spanning tree of the complete graph with weights ``dist`` (Prim, O(n^2))."""
    n = len(dist)
    inside = np.zeros(n, bool)
    best = np.full(n, np.iinfo(np.int64).max)
    link = np.full(n, -1)
    best[0] = 0
    edges = []
    for _ in range(n):
        i = int(np.argmin(np.where(inside, np.iinfo(np.int64).max, best)))
        inside[i] = True
        if link[i] >= 0:
            edges.append((int(link[i]), i))
        closer = ~inside & (dist[i] < best)
        best[closer], link[closer] = dist[i][closer], i
    return edges


def _bfs(adj: list[list[int]], root: int) -> tuple[list[int], list[int], list[int]]:
    n = len(adj)
    parent, depth, order = [-1] * n, [-1] * n, []
    depth[root] = 0
    queue = deque([root])
    while queue:
        i = queue.popleft()
        order.append(i)
        for j in adj[i]:
            if depth[j] < 0:
                depth[j], parent[j] = depth[i] + 1, i
                queue.append(j)
    return order, parent, depth


def centre_rooted(n: int, edges: list[tuple[int, int]]) -> tuple[list[int], list[int], int]:
    """(BFS order, parent, depth) of the tree rooted at its centre (the root of minimum depth)."""
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        adj[i].append(j)
        adj[j].append(i)
    _, _, d0 = _bfs(adj, 0)
    a = int(np.argmax(d0))
    _, par_a, da = _bfs(adj, a)
    b = int(np.argmax(da))
    path = [b]
    while path[-1] != a:  # the longest path a..b; its middle is the centre
        path.append(par_a[path[-1]])
    order, parent, depth = _bfs(adj, path[len(path) // 2])
    return order, parent, max(depth)


@dataclass(frozen=True)
class MstPlan:
    """A layer's MST schedule and what it saves."""

    order: np.ndarray
    parent: np.ndarray
    diff_ptr: np.ndarray
    diff_idx: np.ndarray
    depth: int
    bit_reduction: float   # dense bit XNORs / bit XNORs with reuse
    word_reduction: float  # dense word XNORs / word XNORs with reuse (what a CPU can skip)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.order, self.parent, self.diff_ptr, self.diff_idx


def plan(w: np.ndarray, k_bits: int) -> MstPlan:
    """MST over word-level distances (bit-level ties broken), rooted at its centre.

    Channels whose parent saves nothing stay roots (computed in full).

    ``w`` is packed [O, ...] and ``k_bits`` the real reduction length (bits per output channel).
    """
    o = w.shape[0]
    rows = w.reshape(o, -1)
    n_words = rows.shape[1]
    dw, db = hamming_words(w), hamming_bits(w)
    # words first (what a CPU skips), bits break ties (random weights: every word differs)
    order, parent, depth = centre_rooted(o, min_spanning_tree(dw * (k_bits + 1) + db))
    par = np.array(parent, np.int64)
    # a child costs 2 popcounts per differing word (its own and its parent's): reuse only when cheaper
    for j in range(o):
        if par[j] >= 0 and 2 * dw[par[j], j] >= n_words:
            par[j] = -1
    ptr, idx = [0], []
    for j in range(o):
        if par[j] >= 0:
            idx.extend(np.nonzero(rows[j] != rows[par[j]])[0].tolist())
        ptr.append(len(idx))
    roots = par < 0
    word_cost = roots.sum() * n_words + sum(2 * dw[par[j], j] for j in range(o) if not roots[j])
    tree_bits = k_bits + sum(db[parent[j], j] for j in range(o) if parent[j] >= 0)
    return MstPlan(np.array(order, np.int32), par.astype(np.int32), np.array(ptr, np.int32),
                   np.array(idx, np.int32), depth, o * k_bits / max(tree_bits, 1),
                   o * n_words / max(word_cost, 1))


def plan_depth(parent: np.ndarray) -> int:
    """Longest chain of parents in a schedule."""
    depth = np.zeros(len(parent), np.int64)
    for j in range(len(parent)):
        d, i = 0, j
        while parent[i] >= 0:
            i, d = parent[i], d + 1
        depth[j] = d
    return int(depth.max()) if len(depth) else 0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def mst_conv_acc(xr, w2, nw, sw, sh, oh, ow, kw, order, parent, diff_ptr, diff_idx, acc):
    """groups == 1 conv popcount sums in MST order; xr [N, Hp, Wp * nw], w2 [O, kh * kw * nw] (flattened).

    A root channel takes every word; a child takes its parent's sum plus, over the differing words only,
    popcount(x ^ w_child) - popcount(x ^ w_parent).
    """
    n_ = xr.shape[0]
    o_, red = w2.shape
    run = kw * nw
    ky_of = np.empty(red, np.int64)
    off_of = np.empty(red, np.int64)
    for r in range(red):
        ky_of[r] = r // run
        off_of[r] = r % run
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                base = ox * sw * nw
                for t in range(o_):
                    o = order[t]
                    p = parent[o]
                    if p < 0:
                        a = 0
                        for r in range(red):
                            a += popcount(xr[n, oy * sh + ky_of[r], base + off_of[r]] ^ w2[o, r])
                    else:
                        a = np.int64(acc[n, oy, ox, p])
                        for q in range(diff_ptr[o], diff_ptr[o + 1]):
                            r = diff_idx[q]
                            xv = xr[n, oy * sh + ky_of[r], base + off_of[r]]
                            a += popcount(xv ^ w2[o, r]) - popcount(xv ^ w2[p, r])
                    acc[n, oy, ox, o] = a


def mst_conv_acc_ref(xr, w2, nw, sw, sh, oh, ow, kw, order, parent, diff_ptr, diff_idx, acc):
    """Plain NumPy popcount sums of the same conv (no reuse): the MST kernel must equal this."""
    n_, o_ = xr.shape[0], w2.shape[0]
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    kh = w2.shape[1] // (kw * nw)
    for oy in range(oh):
        for ox in range(ow):
            rows = xr[:, oy * sh: oy * sh + kh, ox * sw * nw: ox * sw * nw + kw * nw].reshape(n_, -1)
            x = np.ascontiguousarray(rows[:, None, :] ^ w2[None]).view(np.uint8)
            acc[:, oy, ox, :] = table[x].reshape(n_, o_, -1).sum(-1)
