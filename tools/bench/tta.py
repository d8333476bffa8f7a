"""Test-time adaptation on a continual corrupted digits stream: edgert policies vs no adaptation vs TENT.

    python -m tools.bench tta

The reference float CNN (tools/models/digits_cnn.py, conv-BN-ReLU x3) is trained on clean digits and
compiled with BatchNorm folded (the default). The stream is the held-out split under seven
corruptions (noise, blur, contrast, brightness, shift, occlusion, pixelation) at severities 1, 3 and 5
in sequence, 48 images per (corruption, severity), the same stream ten times over (continual: no
reset between segments or repeats). Each policy's outputs are scored before it adapts on that batch.
TENT is the PyTorch reference with full backpropagation: BatchNorm in training mode (batch
statistics), Adam on BN scale and shift, entropy loss, as in Wang et al. 2021. The opt-in ``adapter``
policy runs on a second artifact compiled with side blocks warmed up on the digits training split; the
warm-up jitters noise and contrast (mild forms of two of the corruptions), so the row "none, adapter
artifact" separates what the warm-up gives from what the device updates give.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM loads its thread pool
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy
import itertools
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from tools.bench.report import machine, summarize, time_interleaved, write_section

SEVERITIES = (1, 3, 5)
PER_SEGMENT = 64
REPEATS = 10
BATCHES = (1, 16, 64)
BUDGET = "320KB"  # --adapt-memory for the memory table's planned row (at batch 16)
LOW_RANK = 2  # --adapter-rank of the budgeted adapter artifact
ADAPTER_BUDGET = "13KB"  # its --adapt-memory (at batch 1; a fifth of TENT's step): only the last side block fits
LOW = f"adapter, --adapter-rank {LOW_RANK} --adapt-memory {ADAPTER_BUDGET}"


def _blur(x: np.ndarray, s: int) -> np.ndarray:
    k = np.array([1.0, 2.0, 1.0]) if s < 3 else (np.ones(3) if s < 5 else np.ones(5))
    k = k / k.sum()
    r = len(k) // 2
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    p = sum(k[i] * p[:, :, :, i:i + x.shape[3]] for i in range(len(k)))
    return sum(k[i] * p[:, :, i:i + x.shape[2], :] for i in range(len(k)))


def _pixelate(x: np.ndarray, s: int) -> np.ndarray:
    f = 2 if s < 5 else 4
    small = x.reshape(x.shape[0], 1, 8 // f, f, 8 // f, f).mean(axis=(3, 5))
    out = small.repeat(f, axis=2).repeat(f, axis=3)
    return out if s > 1 else 0.5 * (x + out)


def _occlude(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    k = 1 + s // 2 + 1  # 2, 3, 4 pixels square
    out = x.copy()
    for i in range(len(x)):
        r, c = rng.integers(0, 9 - k, 2)
        out[i, :, r:r + k, c:c + k] = 0.0
    return out


def _shift(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(x)
    d = (s + 1) // 2  # 1, 2, 3 pixels
    for i in range(len(x)):
        dr, dc = rng.integers(-d, d + 1, 2)
        out[i] = np.roll(x[i], (dr, dc), axis=(1, 2))
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "noise": lambda x, s, rng: x + rng.normal(0, 0.08 * s, x.shape),
    "blur": lambda x, s, rng: _blur(x, s),
    "contrast": lambda x, s, rng: (x - x.mean(axis=(2, 3), keepdims=True)) * (1 - 0.17 * s)
                                  + x.mean(axis=(2, 3), keepdims=True),
    "brightness": lambda x, s, rng: x + 0.12 * s,
    "shift": _shift,
    "occlusion": _occlude,
    "pixelation": lambda x, s, rng: _pixelate(x, s),
}


def make_stream(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One pass: every corruption at every severity, PER_SEGMENT images each, in sequence."""
    rng = np.random.default_rng(seed)
    xs, ys, names = [], [], []
    for name, fn in CORRUPTIONS.items():
        for s in SEVERITIES:
            idx = rng.choice(len(x), PER_SEGMENT, replace=False)
            xs.append(fn(x[idx].astype(np.float64), s, rng).astype(np.float32))
            ys.append(y[idx])
            names.append(f"{name}-{s}")
    return np.concatenate(xs), np.concatenate(ys), names


class Tent:
    """PyTorch TENT: BN in train mode, Adam on BN affine parameters, entropy of the softmax."""

    def __init__(self, model: nn.Module, lr: float = 1e-3):
        self.model = copy.deepcopy(model).train()
        params = []
        for m in self.model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
                params += [m.weight, m.bias]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        self.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.model(torch.from_numpy(x))
        logp = out.log_softmax(1)
        loss = -(logp.exp() * logp).sum(1).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return out.detach().numpy()


def _memory_table(model: nn.Module, xs: np.ndarray, full, budgeted, adapters, low) -> dict:
    """Step peak memory by parts per batch size: entropy (all BatchNorms, and under BUDGET) and the
    adapter policy (artifact ``adapters``, and ``low``: low rank under ADAPTER_BUDGET) vs TENT."""
    from edgert.runtime.adapt import make_policy
    from edgert.runtime.engine import Engine
    from tools.bench.torch_memory import step_memory

    rows = []
    for batch in BATCHES:
        x = xs[:batch]
        tent = Tent(model)
        tent.run(x)  # Adam's state exists from here on

        def loss() -> torch.Tensor:
            logp = tent.model(torch.from_numpy(x)).log_softmax(1)
            return -(logp.exp() * logp).sum(1).mean()

        ref = step_memory(loss, tent.model, tent.opt)
        for name, art in (("entropy", full), (f"entropy, --adapt-memory {BUDGET}", budgeted)):
            p = make_policy("entropy", Engine(art), threshold=1.0)  # every sample counts: the largest step
            for _ in range(2):
                p.run(x)
            m = p.stats()["step_memory"][str(batch)]
            rows.append((batch, name, m, m["step_peak"] / ref["step_peak"]))
        for name, art in (("adapter", adapters), (LOW, low)):
            p = make_policy("adapter", Engine(art), margin=1.0, memory_every=1)  # every sample counts
            for _ in range(2):
                p.run(x)
            m = p.stats()["step_memory"]
            rows.append((batch, name, m, m["step_peak"] / ref["step_peak"]))
        rows.append((batch, "TENT torch", ref, 1.0))
    layers = budgeted.manifest["adapt"]["entropy"]["layers"]
    return {"rows": rows, "budget_layers": f"{len(layers)} of {len(budgeted.manifest['adapt']['norm'])} BatchNorms "
                                         f"({', '.join(layers)})"}


def _errors(run: Callable[[np.ndarray], np.ndarray], xs: np.ndarray, ys: np.ndarray, batch: int) -> list[float]:
    """Error per repeat of the stream."""
    out = []
    for _ in range(REPEATS):
        wrong = 0
        for i in range(0, len(xs), batch):
            wrong += int((run(xs[i:i + batch]).argmax(1) != ys[i:i + batch]).sum())
        out.append(wrong / len(xs))
    return out


def _adapter_artifact(model: nn.Module, example: np.ndarray, **options):
    """The model compiled with side blocks, warmed up on the digits training split (with labels)."""
    import edgert
    from tools.models.digits_cnn import digits_split

    xtr, ytr, _, _ = digits_split()
    return edgert.compile(model, example, adapters=True, adapter_data={"x": xtr, "y": ytr}, **options)


def main() -> str:
    import edgert
    from edgert.runtime.adapt import POLICIES, make_policy
    from edgert.runtime.engine import Engine
    from tools.models.digits_cnn import digits_split, train

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    model, clean_acc = train()
    _, _, xte, yte = digits_split()
    xs, ys, segments = make_stream(xte, yte)
    art = edgert.compile(model, xte[:1])
    policies = [p for p in POLICIES if p not in ("none", "adapter")]
    art_ad = _adapter_artifact(model, xte[:1])
    art_low = _adapter_artifact(model, xte[:1], adapter_rank=LOW_RANK, adapt_memory=ADAPTER_BUDGET)
    budgeted = edgert.compile(model, xte[:1], adapt_memory=BUDGET, adapt_batch=16)
    rows = []
    for batch in BATCHES:
        runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {"none": Engine(art).run}
        for name in policies:
            runs[name] = make_policy(name, Engine(art)).run
        runs["norm (no guard)"] = make_policy("norm", Engine(art), guard=False).run
        for name in ("norm", "entropy"):
            runs[f"{name} (no shift reset)"] = make_policy(name, Engine(art), shift_margin=None).run
        runs[f"entropy, --adapt-memory {BUDGET}"] = make_policy("entropy", Engine(budgeted)).run
        runs["none, adapter artifact (warmed up)"] = Engine(art_ad).run
        runs["adapter"] = make_policy("adapter", Engine(art_ad)).run
        runs["adapter (no shift reset)"] = make_policy("adapter", Engine(art_ad), shift_margin=None).run
        runs["none, low-rank adapter artifact (warmed up)"] = Engine(art_low).run
        runs[LOW] = make_policy("adapter", Engine(art_low)).run
        for lr in (1e-3, 1e-2):
            torch.manual_seed(0)
            runs[f"TENT torch lr {lr:g}"] = Tent(model, lr).run
        for name, run in runs.items():
            errs = _errors(run, xs, ys, batch)
            st = run.__self__.stats() if hasattr(run.__self__, "stats") else {}  # a policy's, or TENT/Engine
            resets = f"{st['shift_resets']} / {st['collapses']}" if "collapses" in st else ""
            rows.append((batch, name, errs, resets))
    # step latency at batch 1, relative to inference, on the stream's samples in turn: one sample
    # repeated would trip the collapse guard (one class takes the window) and time its resets instead
    singles = itertools.cycle([xs[i:i + 1] for i in range(len(xs))])
    engine = Engine(art)
    fns = {"inference (none)": lambda: engine.run(next(singles))}
    for name in policies:
        p = make_policy(name, Engine(art))
        fns[f"{name} step"] = lambda p=p: p.run(next(singles))
    fns["inference, adapter artifact"] = lambda e=Engine(art_ad): e.run(next(singles))
    fns["adapter step"] = lambda p=make_policy("adapter", Engine(art_ad)): p.run(next(singles))
    fns[f"{LOW} step"] = lambda p=make_policy("adapter", Engine(art_low)): p.run(next(singles))
    tent = Tent(model)
    fns["TENT torch step"] = lambda: tent.run(next(singles))
    timing = summarize(time_interleaved(fns, rounds=15), "inference (none)")
    memory = _memory_table(model, xs, art, budgeted, art_ad, art_low)

    lines = [f"Machine: {machine()}; one thread. Model: tools/models/digits_cnn.py (clean held-out error "
             f"{100 * (1 - clean_acc):.1f}%), compiled with BatchNorm folded. Stream: {len(xs)} images per "
             f"repeat ({len(CORRUPTIONS)} corruptions x severities {list(SEVERITIES)} x {PER_SEGMENT}), "
             f"{REPEATS} repeats, continual. Error (%) of outputs scored before each update; policies with "
             "the collapse guard and the shift reset unless stated (resets: shift / collapse, over all "
             "repeats). TENT: PyTorch, full backprop, Adam on BN scale/shift.", "",
             "| batch | method | error, repeat 1 | error, repeat 10 | mean over repeats | resets |",
             "|---|---|---|---|---|---|"]
    for batch, name, errs, resets in rows:
        lines.append(f"| {batch} | {name} | {100 * errs[0]:.2f} | {100 * errs[-1]:.2f} | "
                     f"{100 * np.mean(errs):.2f} | {resets} |")
    lines += ["", "Step latency at batch 1 (inference + one adaptation step), relative to inference, the stream's "
              "samples in turn:", "",
              "| | min ms | median ms | median / inference |", "|---|---|---|---|"]
    for name, lo, med, ratio in timing:
        lines.append(f"| {name} | {lo:.3f} | {med:.3f} | {1 / ratio:.2f}x |")
    lines += ["", f"Peak memory of one adaptation step (kept activations + optimizer state + transient peak of "
              "the backward and update, gradients included; edgert: taps + tracemalloc, the second step "
              "at that batch size; TENT: tensors saved for backward once per storage + Adam state + the "
              "profiler's allocation peak; model weights not counted on either side; "
              "tools/bench/torch_memory.py). `entropy` adapts every BatchNorm; `entropy, --adapt-memory "
              f"{BUDGET}` was compiled with that budget at batch 16, which keeps {memory['budget_layers']}. "
              "The entropy step takes a batch larger than the artifact's --adapt-batch (1, and 16 for the "
              "budgeted one) in chunks of that many samples (forward with taps, backward, gradients and "
              "moment sums added up: exact, since the BatchNorms run on running statistics), so what it "
              "keeps does not grow with the batch; taps the backward does not read are dropped once the "
              "statistics update has read them. `adapter`: the side blocks' step, also one sample at a time "
              "(its default chunk), every sample counted; it keeps only the taps its backward reads and "
              f"the side outputs (which become the L1 seeds in place). `{LOW}`: side blocks warmed up "
              f"as full 1x1 convs except the last, a 64->{LOW_RANK}->64 bottleneck, the only one the device "
              "trains (the deepest blocks whose estimated step fits the budget at batch 1); its step keeps "
              "the block's input and bottleneck values only (the side output is recomputed per pixel).",
              "", "| batch | method | kept KB | optimizer KB | transient KB | step peak KB | / TENT torch |",
              "|---|---|---|---|---|---|---|"]
    for batch, name, m, ratio in memory["rows"]:
        lines.append(f"| {batch} | {name} | {m['kept'] / 1024:.1f} | {m['optimizer'] / 1024:.1f} | "
                     f"{m['transient'] / 1024:.1f} | {m['step_peak'] / 1024:.1f} | {ratio:.2f} |")
    lines += ["", f"Run time {time.perf_counter() - t_start:.0f} s."]
    md = "\n".join(lines)
    write_section("tta", "## Test-time adaptation (digits, continual corrupted stream)\n\n" + md)
    return md


if __name__ == "__main__":
    print(main())
