"""MST channel reuse: distances, tree, centre rooting, and the reuse kernel vs the plain conv."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert.ops.binary import bits, conv, mst


def test_distances_hand_case():
    w = np.array([[0, 0], [1, 0], [3, 5]], np.uint64)  # bits: {} / {0} / {0,1} + {0,2}
    assert_array_equal(mst.hamming_bits(w), [[0, 1, 4], [1, 0, 3], [4, 3, 0]])
    assert_array_equal(mst.hamming_words(w), [[0, 1, 2], [1, 0, 2], [2, 2, 0]])


def test_tree_is_minimal_and_rooted_at_the_centre():
    # a path 0-1-2-3-4 (distance 1 between neighbours, more otherwise): centre 2, depth 2
    pos = np.arange(5)
    dist = np.abs(pos[:, None] - pos[None]) ** 2
    edges = mst.min_spanning_tree(dist)
    assert sorted(tuple(sorted(e)) for e in edges) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    order, parent, depth = mst.centre_rooted(5, edges)
    assert order[0] == 2 and parent[2] == -1 and depth == 2


def _similar_weights(rng, o, c, flips):
    """Channels that copy a random earlier channel and flip ``flips`` whole words (word-structured)."""
    base = bits.pack_conv_weight(rng.standard_normal((o, c, 3, 3)).astype(np.float32))
    other = bits.pack_conv_weight(rng.standard_normal((o, c, 3, 3)).astype(np.float32))  # valid pad bits
    for j in range(1, o):
        base[j] = base[rng.integers(0, j)]
        flat = base[j].reshape(-1)
        for d in rng.choice(flat.size, flips, replace=False):
            flat[d] = other[j].reshape(-1)[d]
    return base


def test_random_weights_save_bits_but_not_words():
    w = bits.pack_conv_weight(np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32))
    p = mst.plan(w, 9 * 64)
    assert p.bit_reduction > 1.8 and p.word_reduction == 1.0 and (p.parent < 0).all()


@pytest.mark.parametrize("c,stride", [(64, 1), (130, 2)])
def test_mst_kernel_equals_plain_conv(c, stride):
    rng = np.random.default_rng(c)
    o = 40
    w = _similar_weights(rng, o, c, 2)
    p = mst.plan(w, 9 * c)
    assert p.word_reduction > 1.5 and (p.parent >= 0).any() and p.depth >= 1
    x = rng.standard_normal((2, c, 7, 6)).astype(np.float32)
    xb = bits.bitpack(x)
    thr = rng.integers(-50, 50, o).astype(np.int32)
    flip = rng.integers(0, 2, o).astype(np.uint8)
    args = (xb, w, c, (stride, stride), (1, 1, 1, 1), "zero", 1, "bits", thr, flip)
    assert_array_equal(conv.binary_conv2d(*args, schedule=p.arrays()), conv.binary_conv2d(*args))
    dot = conv.binary_conv_dot_ref(xb, w, c, (stride, stride), (1, 1, 1, 1), "zero", 1)
    assert_array_equal(conv.binary_conv2d(*args, schedule=p.arrays()), conv.epilogue_ref(dot, "bits", thr, flip))
