"""Train the reference spiking networks on scikit-learn's digits, rate-coded, and compile them.

    python -m tools.models.digits_snn --kind fc   --out build/digits_snn_fc.edgert
    python -m tools.models.digits_snn --kind conv --out build/digits_snn_conv.edgert

Each pixel (scaled to [0, 1]) is a Bernoulli spike probability per time step (rate coding, T = 25);
the class is the output neuron with the most spikes. Trained with snntorch's surrogate gradients
(BPTT, cross-entropy on spike counts) in a few seconds on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

from tools.models.digits_cnn import digits_split

STEPS = 25


def rate_code(x: np.ndarray, steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """Spikes [T, N, ...] with P(spike) = pixel value, float32."""
    rng = np.random.default_rng(seed)
    return (rng.random((steps,) + x.shape) < x).astype(np.float32)


def fc_snn(hidden: int = 128) -> nn.Sequential:
    """64 - hidden - 10 fully connected, Leaky neurons (subtractive reset)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), snn.Leaky(beta=0.9, init_hidden=True),
                         nn.Linear(hidden, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))


def conv_snn() -> nn.Sequential:
    """conv(8) - Leaky - maxpool - conv(16) - Leaky - maxpool - flatten - linear - Leaky, on 8x8 input."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))


def spike_counts(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """snntorch's time loop over x [T, N, ...]; output spikes summed over time [N, 10]."""
    utils.reset(net)
    return torch.stack([net(x[t])[0] for t in range(x.shape[0])]).sum(0)


def train(kind: str = "fc", epochs: int = 6, seed: int = 0) -> tuple[nn.Sequential, float]:
    """Train with Adam on rate-coded digits; returns the model (eval mode) and held-out accuracy."""
    torch.manual_seed(seed)
    net, xte, yte = fit(fc_snn() if kind == "fc" else conv_snn(), epochs, seed)
    with torch.no_grad():
        pred = spike_counts(net, torch.from_numpy(rate_code(xte, seed=seed + 100))).argmax(1).numpy()
    return net, float((pred == yte).mean())


def fit(net: nn.Sequential, epochs: int, seed: int) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """Train ``net`` with Adam on rate-coded digits (cross-entropy on spike counts); returns it in eval
    mode and the held-out images and labels."""
    xtr, ytr, xte, yte = digits_split(seed)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(seed)
    yt = torch.from_numpy(ytr)
    for epoch in range(epochs):
        xs = torch.from_numpy(rate_code(xtr, seed=seed + 1 + epoch))
        net.train()
        for idx in torch.randperm(len(yt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(spike_counts(net, xs[:, idx]), yt[idx]).backward()
            opt.step()
    utils.reset(net)  # no membrane state left over from training
    return net.eval(), xte, yte


def main() -> None:
    import edgert

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["fc", "conv"], default="fc")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    net, acc = train(args.kind, args.epochs)
    out = args.out or Path(f"models/digits_snn_{args.kind}.edgert")
    out.parent.mkdir(parents=True, exist_ok=True)
    edgert.compile(net, np.zeros((1, 1, 8, 8), np.float32)).save(out)
    print(f"trained digits SNN ({args.kind}) in {time.perf_counter() - t0:.1f} s: held-out accuracy "
          f"{acc:.4f}; compiled to {out}")


if __name__ == "__main__":
    main()
