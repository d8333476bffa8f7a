"""Run an artifact on a board (real or emulated): python run_artifact.py ARTIFACT X.npy Y.npy

Uses only edgert's device runtime (numpy and the TVM runtime, never torch) and prints one JSON line:
the machine it ran on, whether torch was loaded, and the load and run times (under emulation these
times mean nothing; the outputs are what the emulated-board test checks).
"""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np


def main(argv: list[str]) -> None:
    from edgert.runtime.engine import load

    artifact, x_path, y_path = argv
    t0 = time.perf_counter()
    engine = load(artifact)
    t1 = time.perf_counter()
    y = engine.run(np.load(x_path, allow_pickle=False))
    t2 = time.perf_counter()
    np.save(y_path, y)
    print(json.dumps({"machine": platform.machine(), "torch_loaded": "torch" in sys.modules,
                      "load_s": t1 - t0, "run_s": t2 - t1}))


if __name__ == "__main__":
    main(sys.argv[1:])
