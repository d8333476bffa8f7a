"""Test-time adaptation policies: run a batch, adapt from it without labels, keep state safely.

Every policy wraps one Engine and offers the same five calls, which is all the daemon uses:

- ``run(x)``: inference on batch ``x`` and, where the policy adapts, one update from it; returns outputs.
- ``state_dict()``: everything adapted (parameters, running statistics, memories) as numpy arrays, so a
  checkpoint is an .npz without pickle; ``load_state_dict(state)`` restores it, validating shapes.
- ``reset()``: back to the artifact's source parameters.
- ``stats()``: JSON-ready counters (samples seen, updates, collapse resets, ...).

``make_policy(name, engine, **options)`` builds one by name (``edgert run --adapt NAME``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgert.errors import EdgertError, InputError
from edgert.runtime.engine import Engine


class NoAdaptation:
    """The "none" policy: inference only; its state is empty."""

    name = "none"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.samples = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        y = self.engine.run(x)
        self.samples += len(x)
        return y

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise InputError(f"the 'none' policy keeps no state, got {sorted(state)}")

    def reset(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"policy": self.name, "samples": self.samples}


# name -> factory(engine, **options); adaptation modules add themselves here
POLICIES: dict[str, Callable[..., Any]] = {"none": NoAdaptation}


def make_policy(name: str, engine: Engine, **options: Any):
    """The policy called ``name`` around ``engine``; an unknown name lists the known ones."""
    if name not in POLICIES:
        raise EdgertError(f"unknown adaptation policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name](engine, **options)


DEFAULT_POLICY = "norm"  # what `--adapt` and the daemon use when no policy is named

from edgert.runtime.adapt.norm import NormPolicy  # noqa: E402  (registers after POLICIES exists)

POLICIES["norm"] = NormPolicy

from edgert.runtime.adapt.knn import KnnPolicy  # noqa: E402

POLICIES["knn"] = KnnPolicy

from edgert.runtime.adapt.entropy import EntropyPolicy  # noqa: E402

POLICIES["entropy"] = EntropyPolicy

from edgert.runtime.adapt.adapter import AdapterPolicy  # noqa: E402  (opt-in: needs `compile --adapters`)

POLICIES["adapter"] = AdapterPolicy
