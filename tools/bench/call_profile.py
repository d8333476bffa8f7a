"""Per-call overhead at batch 1, one thread: where edgert's time goes against onnxruntime.

    python -m tools.bench.call_profile      (a diagnostic: prints, writes nothing to BENCHMARKS.md)

For the digits CNN and the MLPerf Tiny AD autoencoder: Engine.run, its input check, the runner's
call, the bound VM closure alone, the kernels alone
(TVM's time evaluator, summed), and onnxruntime; min and median of interleaved rounds, in us.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = os.environ["EDGERT_THREADS"] = "1"

import tempfile
from pathlib import Path

import numpy as np
import torch

from tools.bench.float_cnn import _onnx_session
from tools.bench.report import machine, time_interleaved


def _models():
    from tools.models.digits_cnn import DigitsCNN
    from tools.models.mlperf_tiny import MODELS

    torch.manual_seed(0)
    return {"digits CNN": (DigitsCNN().eval(), (1, 8, 8)), "AD autoencoder": (MODELS["ad_autoencoder"][0](),
                                                                              MODELS["ad_autoencoder"][1])}


def main(rounds: int = 15) -> str:
    import edgert

    lines = [f"call profile on {machine()}, load {os.getloadavg()[0]:.2f}, batch 1, one thread (us, min / median)"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in _models().items():
            engine = edgert.load(edgert.compile(model, np.zeros((1, *shape), np.float32)).save(
                Path(tmp) / "m.edgert"))
            sess = _onnx_session(model, shape, Path(tmp) / "m.onnx")
            x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            runner = engine._whole._runner(False)
            engine.run(x)
            fns = {"onnxruntime": lambda: sess.run(None, {"input": x}),
                   "Engine.run": lambda: engine.run(x),
                   "input check": lambda: engine._check((x,)),
                   "runner.run": lambda: runner.run([x])}
            fns["VM call alone"] = runner.bound([x])[1]
            samples = time_interleaved(fns, rounds=rounds)
            kernels = runner.profile([x], best=True)
            lines.append(f"{name}: kernels alone {sum(t for _, t in kernels) * 1e6:.1f} ({len(kernels)} calls)")
            for k, v in samples.items():
                lines.append(f"  {k:14s} {min(v) * 1e6:7.1f} {np.median(v) * 1e6:7.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
