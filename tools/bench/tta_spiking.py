"""Test-time adaptation of a spiking network on a continual corrupted rate-coded digits stream.

    python -m tools.bench tta_spiking

A conv SNN with BatchNorm (conv-BN-Leaky x2, linear-Leaky; tools/models/digits_snn.py's recipe) is
trained on clean rate-coded digits (T = 25) and compiled with BatchNorm folded. The stream is the
held-out split, rate-coded, under four spike-train corruptions (extra random spikes, dropped
spikes, rate scaling, shift) at severities 1, 3 and 5 in sequence, 48 images per segment, the same
stream three times over with no reset (continual). A prediction is the output neuron with the most
spikes, scored before the policy adapts on that batch. Timings: one step of each policy relative to
an inference of the same batch, interleaved.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM loads its thread pool
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time

import numpy as np
import snntorch as snn
import torch
from torch import nn

from tools.bench.report import machine, summarize, time_interleaved, write_section
from tools.models.digits_snn import STEPS, fit, rate_code

SEVERITIES = (1, 3, 5)
PER_SEGMENT = 48
REPEATS = 3
BATCHES = (1, 16)
POLICIES = ("none", "norm", "knn")


def conv_bn_snn() -> nn.Sequential:
    """conv(8)-BN-Leaky-maxpool-conv(16)-BN-Leaky-maxpool-flatten-linear-Leaky on 8x8 input."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), snn.Leaky(beta=0.9, init_hidden=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
        snn.Leaky(beta=0.9, init_hidden=True, output=True))


def train(epochs: int = 5, seed: int = 0) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """Train on clean rate-coded digits; returns the model (eval mode) and the held-out split."""
    torch.manual_seed(seed)
    return fit(conv_bn_snn(), epochs, seed)


def corrupt(spikes: np.ndarray, x: np.ndarray, kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """A corrupted spike train [T, N, 1, 8, 8] of images x (rates in [0, 1]) at severity s (1..5)."""
    if kind == "extra spikes":  # background firing added to every input
        return np.maximum(spikes, rng.random(spikes.shape) < 0.06 * s).astype(np.float32)
    if kind == "dropped spikes":
        return (spikes * (rng.random(spikes.shape) >= 0.14 * s)).astype(np.float32)
    if kind == "rate scaling":  # a brighter sensor: every rate multiplied
        return (rng.random(spikes.shape) < np.clip(x * (1 + 0.5 * s), 0, 1)).astype(np.float32)
    shifted = np.roll(x, (1 + s // 3, 1 + s // 3), axis=(2, 3))  # shift by 1, 2, 2 pixels, wrapped
    return (rng.random(spikes.shape) < shifted).astype(np.float32)


KINDS = ("extra spikes", "dropped spikes", "rate scaling", "shift")


def make_stream(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spike trains [T, N, 1, 8, 8] and labels of the continual stream (one pass)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for kind in KINDS:
        for s in SEVERITIES:
            idx = rng.choice(len(x), PER_SEGMENT, replace=False)
            clean = rate_code(x[idx], STEPS, seed=int(rng.integers(1 << 30)))
            xs.append(corrupt(clean, x[idx], kind, s, rng))
            ys.append(y[idx])
    return np.concatenate(xs, axis=1), np.concatenate(ys)


def _error(policy, xs: np.ndarray, ys: np.ndarray, batch: int) -> list[float]:
    """Error per repeat of the stream."""
    errs = []
    for _ in range(REPEATS):
        wrong = 0
        for i in range(0, len(ys), batch):
            out = policy.run(xs[:, i:i + batch])
            pred = (out.sum(axis=0) if out.ndim == 3 else out).argmax(axis=1)
            wrong += int((pred != ys[i:i + batch]).sum())
        errs.append(wrong / len(ys))
    return errs


def main() -> str:
    import edgert
    from edgert.runtime.adapt import make_policy
    from edgert.runtime.engine import Engine

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    net, xte, yte = train()
    art = edgert.compile(net, np.zeros((1, 1, 8, 8), np.float32))
    train_s = time.perf_counter() - t0
    clean = Engine(art).run(rate_code(xte, seed=100)).sum(0).argmax(1)
    clean_err = float((clean != yte).mean())
    xs, ys = make_stream(xte, yte)
    rows = []
    for batch in BATCHES:
        for name in POLICIES:
            errs = _error(make_policy(name, Engine(art)), xs, ys, batch)
            rows.append((batch, name, errs))
    timing = []
    for batch in BATCHES:
        x = xs[:, :batch]
        engine = Engine(art)
        fns = {"inference": lambda e=engine, x=x: e.run(x)}
        for name in ("norm", "knn"):
            p = make_policy(name, Engine(art))
            fns[name] = lambda p=p, x=x: p.run(x)
        timing.append((batch, summarize(time_interleaved(fns, rounds=9), "inference")))
    md = [f"Machine: {machine()}; one thread; shared with other jobs, so timings are noisy. "
          f"Trained in {train_s:.0f} s; clean held-out error {clean_err:.1%}. Stream: {len(ys)} images "
          f"({', '.join(KINDS)} at severities {SEVERITIES}), T = {STEPS}, {REPEATS} repeats, continual. "
          "Policies at their defaults; a spiking sample is a whole sequence, the prediction the output "
          "spike counts.\n",
          "| batch | policy | error, first repeat | error, last repeat | mean |", "|---|---|---|---|---|"]
    for batch, name, errs in rows:
        md.append(f"| {batch} | {name} | {errs[0]:.1%} | {errs[-1]:.1%} | {np.mean(errs):.1%} |")
    md += ["", "Step time (policy.run: inference with taps + update) relative to Engine.run on the same "
           "batch, 9 interleaved rounds:", "",
           "| batch | | min ms | median ms | step / inference (median) |", "|---|---|---|---|---|"]
    for batch, summ in timing:
        for n, mn, med, ratio in summ:
            md.append(f"| {batch} | {n} | {mn:.2f} | {med:.2f} | {1 / ratio:.2f}x |")
    text = "\n".join(md)
    write_section("tta_spiking", "## Test-time adaptation of a spiking network (digits, rate-coded, "
                  "continual corrupted stream)\n\n" + text)
    return text


if __name__ == "__main__":
    print(main())
