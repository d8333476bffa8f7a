"""edgert vs torch eager vs onnxruntime on float CNNs, one thread, batch 1 and 32.

    python -m tools.bench float_cnn

Models: the digits CNN (tools/models/digits_cnn.py, untrained weights are as costly as trained ones),
a ResNet basic block at 64 channels, 32x32, and the four MLPerf Tiny reference models
(tools/models/mlperf_tiny.py: KWS DS-CNN, VWW MobileNetV1 0.25, IC ResNet-8, AD autoencoder; random
weights, measured BatchNorm statistics), and the modern-ops zoo of tests/zoo.py (MobileNetV3 blocks with
squeeze-excite, an audio TCN, a tiny U-Net, a transformer block with attention). Writes its tables to
BENCHMARKS.md.
"""

from __future__ import annotations

import os

# one thread for edgert, before TVM loads its thread pool (EDGERT_THREADS overrides edgert's own choice)
os.environ["TVM_NUM_THREADS"] = os.environ["EDGERT_THREADS"] = "1"

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
    from tests.zoo import ZOO
    from tools.models.mlperf_tiny import MODELS

    torch.manual_seed(0)
    models = {"digits CNN (1x8x8)": (DigitsCNN().eval(), (1, 8, 8)),
              "ResNet block (64x32x32)": (BasicBlock().eval(), (64, 32, 32))}
    for name, (build, shape) in MODELS.items():  # each seeds itself
        models[f"MLPerf Tiny {MLPERF_LABELS[name]} ({'x'.join(map(str, shape))})"] = (build(), shape)
    for name, label in ZOO_LABELS.items():  # the modern-ops zoo (tests/zoo.py), each seeds itself
        model, example = ZOO[name]()
        shape = tuple(example.shape[1:])
        models[f"{label} ({'x'.join(map(str, shape))})"] = (model, shape)
    return models


ZOO_LABELS = {"mobilenet_v3_block": "MobileNetV3 blocks, squeeze-excite", "temporal_conv": "audio TCN, conv1d",
              "tiny_unet": "tiny U-Net", "transformer_block": "transformer block, attention"}


MLPERF_LABELS = {"kws_dscnn": "KWS DS-CNN", "vww_mobilenet": "VWW MobileNetV1 0.25",
                 "ic_resnet8": "IC ResNet-8", "ad_autoencoder": "AD autoencoder"}


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
    load = os.getloadavg()[0]  # other work on the machine during the run makes the medians wander
    rows, vs_ort = [], {}
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
                got = engine.run(x)
                err, rel = np.abs(got - ref).max(), np.abs(got - ref).max() / np.abs(ref).max()

                def run_torch():
                    with torch.no_grad():
                        model(xt)

                samples = time_interleaved({
                    "torch eager": run_torch,
                    "onnxruntime": lambda: sess.run(None, {"input": x}),
                    "edgert": lambda: engine.run(x)}, rounds=rounds)
                summary = summarize(samples, "torch eager")
                for sys_name, mn, med, ratio in summary:
                    rows.append(f"| {name} | {batch} | {sys_name} | {mn:.3f} | {med:.3f} | {ratio:.2f}x |")
                rows.append(f"| {name} | {batch} | (edgert max abs err vs torch {err:.1e}, {rel:.1e} of the "
                            f"largest output; compile {compile_s:.1f} s) | | | |")
                t = {sys_name: (mn, med) for sys_name, mn, med, _ in summary}
                vs_ort.setdefault(name, {})[batch] = [e / o for e, o in zip(t["edgert"], t["onnxruntime"])]
    table = "\n".join([
        "## Float CNNs: edgert vs torch eager vs onnxruntime",
        "",
        f"`python -m tools.bench float_cnn` on {machine()} ({os.cpu_count()} CPUs, 1-minute load average "
        f"{load:.1f} at the start); one thread each (EDGERT_THREADS=1, ORT "
        f"intra_op_num_threads=1, torch.set_num_threads(1)); {rounds} interleaved rounds, "
        "each the mean of enough calls to fill 50 ms. Ratio = torch median / system median (above 1 is "
        "faster than torch eager). The MLPerf Tiny models are the reference architectures with random "
        "weights and measured BatchNorm statistics (tools/models/mlperf_tiny.py), softmax included; their "
        "strided Keras-'same' convs carry one row/column of zero taps, which all three systems compute "
        "(multiply-adds +1% KWS, +7% VWW, +15% IC). The last four models are the modern-ops zoo "
        "(tests/zoo.py, random weights).",
        "",
        "| model | batch | system | min ms | median ms | vs torch |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "edgert time / onnxruntime time, from the rows above (below 1: edgert is faster; on a shared "
        "machine the min is the steadier figure, another process only ever adds time):",
        "",
        "| model | batch 1, median | batch 1, min | batch 32, median | batch 32, min |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r[1][1]:.2f} | {r[1][0]:.2f} | {r[32][1]:.2f} | {r[32][0]:.2f} |"
          for name, r in vs_ort.items())])
    write_section("float_cnn", table)
    return table


if __name__ == "__main__":
    print(main())
