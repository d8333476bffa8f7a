"""`python -m tests.link.edgert_main ...` = `edgert ...` with a test-only adaptation policy registered.

``running_sum`` adapts something observable and exactly checkable: the float64 sum of every input
sample seen and their count. Its state must survive kills and restarts exactly.
"""

from __future__ import annotations

import numpy as np

from edgert.errors import InputError
from edgert.runtime.adapt import POLICIES


class RunningSum:
    name = "running_sum"

    def __init__(self, engine):
        self.engine = engine
        self.reset()

    def run(self, x):
        y = self.engine.run(x)
        for row in x.reshape(len(x), -1).astype(np.float64):  # one sample at a time: a fixed order
            self.sum += row
            self.count += 1
        return y

    def state_dict(self):
        return {"sum": self.sum.copy(), "count": np.array(self.count, np.int64)}

    def load_state_dict(self, state):
        if sorted(state) != ["count", "sum"] or state["sum"].shape != (16,):
            raise InputError(f"running_sum state needs sum[16] and count, got {sorted(state)}")
        self.sum, self.count = state["sum"].astype(np.float64).copy(), int(state["count"])

    def reset(self):
        self.sum, self.count = np.zeros(16), 0

    def stats(self):
        return {"policy": self.name, "count": self.count, "sum": self.sum.tolist()}


POLICIES.setdefault("running_sum", RunningSum)

if __name__ == "__main__":
    from edgert.cli import main

    main()
