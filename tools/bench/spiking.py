"""edgert vs snntorch eager on spiking networks, one thread, batch 1 and 64.

    python -m tools.bench spiking

Models: an SHD-shaped 700-256-20 fully connected Leaky network over 100 time steps with Bernoulli
input spikes at a stated density (SHD's Heidelberg digits are sparse, a few percent of the 700
channels per 10 ms bin), and the digits conv SNN (tools/models/digits_snn.py) over 25 rate-coded
steps. Untrained weights cost the same as trained ones; they are scaled so the hidden layer fires.
Both systems run the same input; the table reports spikes that differ and per-layer activity taken
from the compiled execution.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM loads its thread pool
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS (edgert's dense synaptic path)

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.bench.report import machine, summarize, time_interleaved, write_section

SHD_DENSITY = 0.05
SHD_STEPS = 100


def shd_fc() -> nn.Sequential:
    import snntorch as snn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(700, 256), snn.Leaky(beta=0.95, init_hidden=True),
                        nn.Linear(256, 20), snn.Leaky(beta=0.95, init_hidden=True, output=True))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(2.0)
    return net.eval()


def conv_net() -> nn.Sequential:
    from tools.models.digits_snn import conv_snn

    torch.manual_seed(0)
    net = conv_snn()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    return net.eval()


def _snntorch_run(net: nn.Module, xt: torch.Tensor) -> torch.Tensor:
    from snntorch import utils

    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(xt[t])[0] for t in range(xt.shape[0])])


def main(rounds: int = 9) -> str:
    import edgert
    from edgert.ops.spiking import kernels as spiking_kernels
    from edgert.ops.spiking.counts import activity as spiking_activity
    from edgert.ops.spiking.counts import energy_pj
    from edgert.targets import load_target

    torch.set_num_threads(1)
    cases = {f"SHD-shaped FC 700-256-20, T={SHD_STEPS}, input density {SHD_DENSITY:.0%}":
             (shd_fc(), (700,), SHD_STEPS, SHD_DENSITY),
             "digits conv SNN (1x8x8), T=25, rate-coded density 0.3": (conv_net(), (1, 8, 8), 25, 0.3)}
    rows, activity = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, shape, steps, density) in cases.items():
            t0 = time.perf_counter()
            path = edgert.compile(net, np.zeros((1, *shape), np.float32)).save(Path(tmp) / "m.edgert")
            engine = edgert.load(path)
            compile_s = time.perf_counter() - t0
            other = next(a for a in spiking_kernels.ADDERS if a != spiking_kernels.adder())
            peer = edgert.load(path)  # its own parameter arrays: the kernels keep per-array state per adder

            def with_other_adder(x, peer=peer, other=other):
                spiking_kernels.force_adder(other)
                try:
                    return peer.run(x)
                finally:
                    spiking_kernels.force_adder(None)
            for batch in (1, 64):
                rng = np.random.default_rng(batch)
                x = (rng.random((steps, batch, *shape)) < density).astype(np.float32)
                xt = torch.from_numpy(x)
                want = _snntorch_run(net, xt).numpy()
                got = engine.run(x)
                flips = int(np.count_nonzero(want != got))
                if batch == 64:
                    layers = spiking_activity(engine)
                    for a in layers:
                        syn = f"{a.synops / a.samples:.0f}" if a.synops is not None else "not fused"
                        activity.append(f"| {name} | {a.name} ({a.op}) | {a.spike_rate:.4f} | {a.sparsity:.4f} | "
                                        f"{syn} | {a.path or '-'} |")
                    e = energy_pj(layers, load_target("loihi").energy)
                    activity.append(f"| {name} | Loihi-class energy per sample ({e['model']}) | | | "
                                    f"{e['total_pj'] / batch / 1e6:.3f} uJ | |")
                fns = {"snntorch eager": lambda: _snntorch_run(net, xt), "edgert": lambda: engine.run(x)}
                if steps == SHD_STEPS:  # the fused event path, where the adders differ
                    fns[f"edgert, {other} adder"] = lambda: with_other_adder(x)
                    other_flips = int(np.count_nonzero(want != with_other_adder(x)))
                samples = time_interleaved(fns, rounds=rounds)
                base_min = min(samples["snntorch eager"]) * 1e3
                for sys_name, mn, med, ratio in summarize(samples, "snntorch eager"):
                    rows.append(f"| {name} | {batch} | {sys_name} | {mn:.3f} | {med:.3f} | {base_min / mn:.1f}x | "
                                f"{ratio:.1f}x |")
                rows.append(f"| {name} | {batch} | ({flips} of {want.size} output spikes differ"
                            + (f", {other_flips} with the {other} adder" if steps == SHD_STEPS else "")
                            + f", {int(want.sum())} spikes; compile {compile_s:.1f} s) | | | | |")
    table = "\n".join([
        f"## Spiking networks: edgert vs snntorch eager, {spiking_kernels.host_isa()} host",
        "",
        f"`python -m tools.bench spiking` on {machine()}; one thread each; {rounds} interleaved rounds, "
        "each the mean of enough calls to fill 50 ms. A call runs all T time steps for the batch (snntorch: "
        "its Python time loop; edgert: `Engine.run(x[T, B, ...])`). Ratios: snntorch min / edgert min and "
        "snntorch median / edgert median. Input spikes are Bernoulli at the stated density.",
        "",
        f"Kernel variant: {spiking_kernels.describe()}. The row \"edgert, {other} adder\" forces the other "
        f"event adder ({spiking_kernels.adder_description(other)}).",
        "",
        "| model | batch | system | min ms | median ms | vs snntorch (min) | vs snntorch (median) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Activity per spiking layer at batch 64, from the compiled execution's counters (spikes per "
        "neuron per step; synaptic ops = effective accumulates per sample-step, input events x fan-out; "
        "path = the synaptic path the layer chose from the measured input density):",
        "",
        "| model | layer | spike rate | sparsity | synaptic ops | path |",
        "|---|---|---|---|---|---|",
        *activity])
    write_section(f"spiking-{spiking_kernels.host_isa()}", table)  # one table per host vector ISA
    return table


if __name__ == "__main__":
    print(main())
