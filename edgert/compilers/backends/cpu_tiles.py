"""The register tiles of edgert's CPU convolution schedule, as plain arithmetic (no TVM).

Shared by the scheduler (tvm_lower, tvm_schedule) and the latency estimator (runtime.estimate),
which prices a convolution by the tile it will really run with.
"""

from __future__ import annotations


def packs_weight(out_per_group: int, lanes: int) -> bool:
    """Whether a convolution vectorizes over output channels (weights packed per ``lanes``): every
    vector of ``lanes`` output channels must read the same input channel, so stay within a group.
    A one-channel input (a first layer) qualifies: each tap broadcasts one value to a vector."""
    return out_per_group % lanes == 0


def conv_tile_columns(out_width: int) -> int:
    """Output columns in one register tile of a channel-vectorized convolution: the largest divisor
    of the width from 4 to 12 (no ragged tile), else the whole row when it is short, else 8."""
    for d in range(min(out_width, 12), 3, -1):
        if out_width % d == 0:
            return d
    return out_width if out_width <= 12 else 8
