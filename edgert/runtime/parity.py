"""Spike-for-spike parity: compare two spike trains and explain every spike that differs.

Float sums in a different order (a BLAS Linear against torch's, an event-driven sum) can move a
membrane by an ulp or so; when it sits that close to threshold the spike flips. The report lists each
flip with the membrane's distance from threshold, so a test can bound it instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Flip:
    """One spike that differs: where, both values, and how close the deciding membrane was."""

    step: int
    index: tuple[int, ...]  # (batch, neuron...) within the step
    expected: float
    got: float
    membrane: float
    threshold: float

    @property
    def distance(self) -> float:
        """|membrane - threshold|: how far the deciding membrane was from firing the other way."""
        return abs(self.membrane - self.threshold)


@dataclass
class ParityReport:
    """Spikes compared, and every flip (in time order)."""

    compared: int
    expected_spikes: int
    flips: list[Flip] = field(default_factory=list)

    @property
    def max_distance(self) -> float:
        return max((f.distance for f in self.flips), default=0.0)

    @property
    def first_step(self) -> int | None:
        return self.flips[0].step if self.flips else None

    def __str__(self) -> str:
        head = (f"{len(self.flips)} of {self.compared} spikes differ ({self.expected_spikes} expected "
                f"spikes); largest distance from threshold {self.max_distance:.3g}")
        rows = [f"  t={f.step} at {f.index}: expected {f.expected:g}, got {f.got:g}, membrane "
                f"{f.membrane:.9g} vs threshold {f.threshold:.9g} (distance {f.distance:.3g})"
                for f in self.flips[:20]]
        return "\n".join([head] + rows + (["  ..."] if len(self.flips) > 20 else []))


def parity_report(expected: np.ndarray, got: np.ndarray, membrane: np.ndarray,
                  threshold: np.ndarray | float) -> ParityReport:
    """Compare spike trains shaped [T, batch, ...]; ``membrane`` (same shape) is the membrane that
    decided each expected spike (before any reset), ``threshold`` broadcasts to one step."""
    expected, got, membrane = (np.asarray(a, np.float32) for a in (expected, got, membrane))
    if expected.shape != got.shape or membrane.shape != expected.shape:
        raise ValueError(f"shapes differ: expected {expected.shape}, got {got.shape}, membrane {membrane.shape}")
    thr = np.broadcast_to(np.asarray(threshold, np.float32), expected.shape[1:])
    flips = [Flip(int(i[0]), tuple(int(v) for v in i[1:]), float(expected[tuple(i)]), float(got[tuple(i)]),
                  float(membrane[tuple(i)]), float(thr[tuple(i[1:])]))
             for i in np.argwhere(expected != got)]
    return ParityReport(expected.size, int(np.count_nonzero(expected)), flips)


def trace(engine, x: np.ndarray, node: str, key: str = "mem") -> tuple[np.ndarray, np.ndarray]:
    """Step ``engine`` through x [T, batch, ...] from a fresh state: (outputs [T, ...], the state array
    ``key`` of ``node`` after each step [T, ...]) — membranes on request."""
    engine.reset()
    outs, states = [], []
    for t in range(x.shape[0]):
        outs.append(engine.step(x[t]))
        states.append(engine.node_state()[node][key].copy())
    return np.stack(outs), np.stack(states)
