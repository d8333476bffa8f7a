"""Train the reference float CNN on scikit-learn's digits (8x8 images) and save it as a .pt2.

    python -m tools.models.digits_cnn --out models/digits_cnn.pt2

Runs in a few seconds on one core. The split is fixed (seed 0), so `digits_split()` gives the same
held-out samples to the demo and the benchmarks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def digits_split(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test): images as float32 [N, 1, 8, 8] scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class DigitsCNN(nn.Module):
    """conv-bn-relu x2, max pool, conv-bn-relu, global average pool, linear: 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def fit(model: nn.Module, epochs: int, lr: float, seed: int = 0, cosine: bool = False,
        extra_loss: Callable[[], torch.Tensor] | None = None) -> float:
    """Adam on the digits training split, batches of 64; returns held-out accuracy (model left in eval)."""
    xtr, ytr, xte, yte = digits_split(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if cosine else None
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            if extra_loss is not None:
                loss = loss + extra_loss()
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())


def train(epochs: int = 15, seed: int = 0) -> tuple[DigitsCNN, float]:
    """Train with Adam; returns the model (eval mode) and its held-out accuracy."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    return model, fit(model, epochs, 3e-3, seed)


def save_pt2(model: nn.Module, path: Path) -> Path:
    """Export with a dynamic batch dimension and save as a torch.export .pt2 file."""
    example = (torch.zeros(2, 1, 8, 8),)
    ep = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(ep, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/digits_cnn.pt2"))
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, acc = train(args.epochs)
    save_pt2(model, args.out)
    print(f"trained digits CNN in {time.perf_counter() - t0:.1f} s: held-out accuracy {acc:.4f}; "
          f"saved {args.out}")


if __name__ == "__main__":
    main()
