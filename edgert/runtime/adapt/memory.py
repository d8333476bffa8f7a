"""The measured peak memory of an adaptation step, by part.

A gradient step holds, at its peak: the forward values kept for its backward (taps, logits),
persistent optimizer state, and what the backward and the update allocate while they run (gradients,
recomputed values, buffers). The last part is measured with tracemalloc, which sees NumPy's buffers;
the first two are counted from the arrays themselves. So

    step_peak = kept + optimizer + transient,   transient = peak increase of traced memory during
                                                the backward and the update (gradients included)

tools/bench/tta.py measures the PyTorch TENT reference by the same parts (see ``tent_step_memory``).
"""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable, Iterable

import numpy as np


def traced_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the peak bytes it allocated above what was allocated when it started."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    return out, max(int(peak), 0)


def nbytes(arrays: Iterable[np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays))


def step_memory(batch: int, kept: int, optimizer: int, gradients: int, transient: int) -> dict[str, int]:
    """The step's parts and its peak, JSON-ready (``gradients`` is part of ``transient``)."""
    return {"batch": batch, "kept": kept, "optimizer": optimizer, "gradients": gradients,
            "transient": transient, "step_peak": kept + optimizer + transient}
