"""Lay out activation buffers in one arena from their lifetimes: buffers alive at the same time never
overlap, buffers that never meet share bytes.

Greedy by size (the planner TF Lite Micro and MCUNet use): the largest buffer is placed first, each
next one at the lowest offset that clears every already placed buffer whose lifetime it overlaps.
The result is usually the liveness lower bound (the largest total of buffers alive at one node) or
close to it; ``peak`` gives that bound so callers can say how close.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16  # bytes: uint64 bit-packed words and any vector load a compiler may emit


@dataclass(frozen=True)
class Buffer:
    """``size`` bytes needed from node index ``first`` (its producer) to ``last`` (its last reader)."""

    name: str
    size: int
    first: int
    last: int


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan(buffers: list[Buffer]) -> tuple[dict[str, int], int]:
    """(offset of each buffer, arena bytes); offsets are multiples of ALIGN."""
    placed: list[tuple[int, int, Buffer]] = []  # (offset, end, buffer)
    offsets: dict[str, int] = {}
    for b in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        clash = sorted((o, e) for o, e, p in placed if p.first <= b.last and b.first <= p.last)
        offset = 0
        for o, e in clash:
            if offset + b.size <= o:
                break
            offset = max(offset, _aligned(e))
        offsets[b.name] = offset
        placed.append((offset, offset + b.size, b))
    return offsets, max((_aligned(e) for _, e, _ in placed), default=0)


def peak(buffers: list[Buffer]) -> int:
    """The liveness lower bound: the most bytes alive at any one node (each buffer aligned)."""
    steps = {b.first for b in buffers} | {b.last for b in buffers}
    return max((sum(_aligned(b.size) for b in buffers if b.first <= t <= b.last) for t in steps), default=0)
