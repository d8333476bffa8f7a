"""edgert vs torch eager vs onnxruntime on float CNNs, one thread, batch 1 and 32.

    python -m tools.bench float_cnn

Models: the digits CNN (tools/models/digits_cnn.py, untrained weights are as costly as trained ones)
and a ResNet basic block at 64 channels, 32x32. Writes its table to BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM loads its thread pool

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.bench.report import machine, summarize, time_interleaved, write_section


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu, conv-bn, identity shortcut, relu."""

    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + x)


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    from tools.models.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    return {"digits CNN (1x8x8)": (DigitsCNN().eval(), (1, 8, 8)),
            "ResNet block (64x32x32)": (BasicBlock().eval(), (64, 32, 32))}


def _onnx_session(model: nn.Module, shape: tuple[int, ...], path: Path):
    import onnxruntime as ort

    torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), input_names=["input"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(rounds: int = 15) -> str:
    import edgert

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in _models().items():
            t0 = time.perf_counter()
            engine = edgert.load(edgert.compile(model, np.zeros((1, *shape), np.float32)).save(
                Path(tmp) / "m.edgert"))
            compile_s = time.perf_counter() - t0
            sess = _onnx_session(model, shape, Path(tmp) / "m.onnx")
            for batch in (1, 32):
                x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.no_grad():
                    ref = model(xt).numpy()
                err = np.abs(engine.run(x) - ref).max()

                def run_torch():
                    with torch.no_grad():
                        model(xt)

                samples = time_interleaved({
                    "torch eager": run_torch,
                    "onnxruntime": lambda: sess.run(None, {"input": x}),
                    "edgert": lambda: engine.run(x)}, rounds=rounds)
                for sys_name, mn, med, ratio in summarize(samples, "torch eager"):
                    rows.append(f"| {name} | {batch} | {sys_name} | {mn:.3f} | {med:.3f} | {ratio:.2f}x |")
                rows.append(f"| {name} | {batch} | (edgert max abs err vs torch {err:.1e}; "
                            f"compile {compile_s:.1f} s) | | | |")
    table = "\n".join([
        "## Float CNNs: edgert vs torch eager vs onnxruntime",
        "",
        f"`python -m tools.bench float_cnn` on {machine()}; one thread each; {rounds} interleaved rounds, "
        "each the mean of enough calls to fill 50 ms. Ratio = torch median / system median (above 1 is "
        "faster than torch eager).",
        "",
        "| model | batch | system | min ms | median ms | vs torch |",
        "|---|---|---|---|---|---|",
        *rows])
    write_section("float_cnn", table)
    return table


if __name__ == "__main__":
    print(main())
