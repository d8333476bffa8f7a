"""Train the reference binary CNN on scikit-learn's digits, with or without the MST regularizer.

    python -m tools.models.binary_digits --out models/binary_digits.pt2 [--mst 1e-4]

Full-precision first conv and last linear (they stay on TVM); the two binary convs (one with +1
padding, one with zero padding) and the binary dense layer run as XNOR-popcount kernels. Trains in
well under a minute on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgert.nn import BinaryConv2d, BinaryLinear
from tools.models.digits_cnn import fit, save_pt2


class BinaryDigits(nn.Module):
    """conv-bn (float), 2 x [binary conv-bn-maxpool], binary dense-bn, linear (float): 10 classes."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64),
            BinaryConv2d(64, width, 3, padding=1, pad_mode="one"), nn.BatchNorm2d(width), nn.MaxPool2d(2),
            BinaryConv2d(width, width, 3, padding=1, pad_mode="zero"), nn.BatchNorm2d(width), nn.MaxPool2d(2),
            nn.Flatten(),
            BinaryLinear(width * 4, 64), nn.BatchNorm1d(64))
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(epochs: int = 15, seed: int = 0, mst: float = 0.0, mst_every: int = 50) -> tuple[BinaryDigits, float]:
    """Train with Adam; ``mst`` > 0 adds the MST word-distance regularizer. Returns (model, test accuracy)."""
    torch.manual_seed(seed)
    model = BinaryDigits()
    extra = None
    if mst > 0:
        from edgert.nn.mst import MSTRegularizer
        reg = MSTRegularizer([m for m in model.modules() if isinstance(m, BinaryConv2d)], every=mst_every)
        extra = lambda: mst * reg()  # noqa: E731
    return model, fit(model, epochs, 5e-3, seed, cosine=True, extra_loss=extra)


def mst_table(model: BinaryDigits, repeat: int = 30) -> list[dict]:
    """Per binary conv: MST bit/word reduction, depth, and the reuse kernel's measured speedup (batch 1)."""
    from edgert.compilers.compile import import_model, optimize
    from edgert.compilers.passes.schedule_mst import mst_report
    from edgert.ops.binary import conv
    from edgert.ops.binary.bits import bitpack
    from edgert.ops.binary.mst import plan

    g = optimize(import_model(model, np.zeros((2, 1, 8, 8), np.float32)))
    rows = {r["layer"]: r for r in mst_report(g)}
    rng = np.random.default_rng(0)
    for n in g.nodes:
        if n.name not in rows:
            continue
        w = g.params[n.inputs[1]]
        x = bitpack(rng.standard_normal((1, n.in_channels, 8, 8)).astype(np.float32))
        p0, p1 = g.params[n.inputs[2]], g.params[n.inputs[3]]
        args = (x, w, n.in_channels, n.stride, n.padding, n.pad_mode, 1, n.output_kind, p0, p1, n.out_groups)
        sched = plan(w, n.reduction).arrays()
        times = {}
        for name, kw in (("plain", {}), ("mst", {"schedule": sched})):
            conv.binary_conv2d(*args, **kw)
            t0 = time.perf_counter()
            for _ in range(repeat):
                conv.binary_conv2d(*args, **kw)
            times[name] = (time.perf_counter() - t0) / repeat
        rows[n.name]["mst_speedup"] = times["plain"] / times["mst"]
        rows[n.name]["applied"] = len(n.inputs) == 8
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/binary_digits.pt2"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--mst", type=float, default=0.0, help="weight of the MST regularizer (0: off)")
    ap.add_argument("--report", action="store_true", help="train without and with --mst, print accuracy and MST stats")
    args = ap.parse_args()
    if args.report:
        for weight in (0.0, args.mst or 0.05):
            model, acc = train(args.epochs, mst=weight)
            print(f"mst={weight}: test accuracy {acc:.4f}")
            for r in mst_table(model):
                print(f"  {r['layer']}: {r['channels']} channels, bit-level {r['bit_reduction']:.2f}x, word-level "
                      f"{r['word_reduction']:.2f}x, depth {r['depth']}, schedule applied {r['applied']}, "
                      f"reuse kernel speedup {r['mst_speedup']:.2f}x")
        return
    t0 = time.perf_counter()
    model, acc = train(args.epochs, mst=args.mst)
    print(f"binary digits CNN (mst={args.mst}): test accuracy {acc:.4f}, trained in {time.perf_counter() - t0:.1f} s")
    print(f"saved {save_pt2(model, args.out)}")


if __name__ == "__main__":
    main()
