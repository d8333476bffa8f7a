"""Train the reference shift CNN on scikit-learn's digits, beside its float twin.

    python -m tools.models.shift_digits --out build/shift_digits.pt2 [--bits 3] [--zero]

Same layout as tools/models/digits_cnn.py, with every conv and the classifier replaced by edgert.nn's
shift layers (weights sign * 2^p in ``bits`` bits, 8-bit fixed-point activations). BatchNorm stays in
float (on the TVM path): folding it would break the power-of-two weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from edgert.nn import ShiftConv2d, ShiftLinear
from tools.models.digits_cnn import fit, save_pt2
from tools.models.digits_cnn import train as train_float


def calibrated(model: nn.Module, shape: tuple[int, ...], seed: int = 0, batch: int = 8) -> nn.Module:
    """Untrained, made realistic: a few training-mode passes over uniform [0, 1) inputs set the shift
    layers' fixed-point ranges and the BatchNorm statistics; then eval."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand((batch,) + shape, generator=gen))
    return model.eval()


class ShiftDigitsCNN(nn.Module):
    def __init__(self, bits: int = 3, zero: bool = False) -> None:
        super().__init__()
        s = dict(bits=bits, zero=zero)
        self.features = nn.Sequential(
            ShiftConv2d(1, 16, 3, padding=1, **s), nn.BatchNorm2d(16), nn.ReLU(),
            ShiftConv2d(16, 32, 3, padding=1, **s), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            ShiftConv2d(32, 64, 3, padding=1, **s), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = ShiftLinear(64, 10, **s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(bits: int = 3, zero: bool = False, epochs: int = 20, seed: int = 0,
          lr: float = 3e-2) -> tuple[ShiftDigitsCNN, float]:
    """Adam with a cosine schedule; returns the model in eval mode and its held-out accuracy.

    The latent log2-magnitudes must move by whole units to change an exponent, hence the high rate.
    """
    torch.manual_seed(seed)
    model = ShiftDigitsCNN(bits, zero)
    return model, fit(model, epochs, lr, seed, cosine=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/shift_digits.pt2"))
    ap.add_argument("--bits", type=int, default=3, choices=(3, 4, 5))
    ap.add_argument("--zero", action="store_true", help="allow zero weights (DeepShift style)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, acc = train(args.bits, args.zero)
    save_pt2(model, args.out)
    print(f"shift digits CNN ({args.bits} bits{', with zero' if args.zero else ''}) trained in "
          f"{time.perf_counter() - t0:.1f} s: held-out accuracy {acc:.4f}; saved {args.out}")
    _, float_acc = train_float()
    print(f"float twin (tools/models/digits_cnn.py): held-out accuracy {float_acc:.4f}")


if __name__ == "__main__":
    main()
