"""MST regularizer: pull tree-neighbour output channels of binary convs together in whole 64-bit words.

Every ``every`` calls the minimum spanning tree over output channels is recomputed from the weights'
signs (word-level Hamming distance, bit-level ties broken; ``edgert.ops.binary.mst``). The penalty is
a group lasso over word blocks of each tree edge,

.. math::  R = \\frac{1}{|E|} \\sum_{(i, j) \\in E} \\sum_{b} \\lVert \\bar w_{i,b} - \\bar w_{j,b} \\rVert_2,
           \\quad \\bar w = \\mathrm{clamp}(w, -1, 1)

where a block b is one packed word of the kernel's layout (64 input channels at one (ky, kx) tap).
The L2 norm per block (not per bit) drives whole blocks to agree, which is what lets the kernel skip
a word; bit-level agreement scattered over words would save nothing on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from edgert.nn.binary import BinaryConv2d


def word_blocks(weight: Tensor) -> Tensor:
    """[O, C, kh, kw] -> [O, kh * kw * words, 64] in the packed kernel's word order (zero-padded channels)."""
    o, c, kh, kw = weight.shape
    words = -(-c // 64)
    w = weight.permute(0, 2, 3, 1)
    w = nn.functional.pad(w, (0, words * 64 - c))
    return w.reshape(o, kh * kw * words, 64)


def tree_edges(weight: Tensor) -> np.ndarray:
    """Edges [E, 2] of the centre-rooted MST over output channels (child, parent) of the weights' signs."""
    from edgert.ops.binary.bits import pack_conv_weight
    from edgert.ops.binary.mst import centre_rooted, hamming_bits, hamming_words, min_spanning_tree

    w = weight.detach().cpu().numpy()
    packed, k_bits = pack_conv_weight(w), int(np.prod(w.shape[1:]))
    dist = hamming_words(packed) * (k_bits + 1) + hamming_bits(packed)
    _, parent, _ = centre_rooted(len(packed), min_spanning_tree(dist))
    return np.array([(j, parent[j]) for j in range(len(parent)) if parent[j] >= 0], np.int64).reshape(-1, 2)


class MSTRegularizer:
    """Callable penalty over the given BinaryConv2d layers (groups == 1); add ``weight * reg()`` to the loss."""

    def __init__(self, layers: list[BinaryConv2d], every: int = 50) -> None:
        bad = [m for m in layers if not isinstance(m, BinaryConv2d) or m.groups != 1]
        if bad:
            raise ValueError(f"MSTRegularizer takes BinaryConv2d layers with groups=1; got {bad}")
        self.layers, self.every, self.calls = list(layers), every, 0
        self.edges: list[Tensor] = []

    def refresh(self) -> None:
        """Recompute every layer's tree from the current weight signs."""
        self.edges = [torch.from_numpy(tree_edges(m.weight)) for m in self.layers]

    def __call__(self) -> Tensor:
        if self.calls % self.every == 0:
            self.refresh()
        self.calls += 1
        total = self.layers[0].weight.new_zeros(())
        for m, e in zip(self.layers, self.edges):
            if len(e) == 0:
                continue
            blocks = word_blocks(m.weight.clamp(-1.0, 1.0))
            diff = blocks[e[:, 0]] - blocks[e[:, 1]]
            total = total + (diff.pow(2).sum(-1) + 1e-8).sqrt().sum() / len(e)
        return total
