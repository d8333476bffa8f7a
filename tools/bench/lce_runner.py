"""Time Larq Compute Engine's interpreter on .tflite files; runs inside LCE's own venv (numpy < 2).

    build/lce-venv/bin/python tools/bench/lce_runner.py ROUNDS FILE...   -> JSON {file: [seconds per call, ...]}

Loads the interpreter without the package __init__ (which imports TensorFlow), as
../shared/data/lce/README.md describes. One thread, indirect BGEMM.
"""

import importlib.util
import json
import pathlib
import sys
import time
import types

import numpy as np

spec = importlib.util.find_spec("larq_compute_engine")
pkg = types.ModuleType("larq_compute_engine")
pkg.__path__ = [str(pathlib.Path(spec.origin).parent)]
sys.modules["larq_compute_engine"] = pkg
from larq_compute_engine.tflite.python.interpreter import Interpreter  # noqa: E402

rounds, files = int(sys.argv[1]), sys.argv[2:]
out = {}
for f in files:
    it = Interpreter(open(f, "rb").read(), num_threads=1, use_indirect_bgemm=True)
    shape = it.input_shapes[0]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    it.predict(x)
    t0 = time.perf_counter()
    it.predict(x)
    loops = max(1, int(0.05 / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(loops):
            it.predict(x)
        samples.append((time.perf_counter() - t0) / loops)
    out[f] = samples
print(json.dumps(out))
