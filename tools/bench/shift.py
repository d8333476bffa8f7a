"""Shift conv layers: edgert's two integer kernels vs torch fp32 vs a per-element shift loop.

    python -m tools.bench shift

3x3 convs, stride 1, padding 1, batch 1, one thread: 32x32x64 -> 64 and 14x14x256 -> 256, 3-bit
zero-free weights, 8-bit activations. All edgert columns include quantizing the input and converting
the integer sums back to float, as the runtime does.
"""

from __future__ import annotations

import numpy as np
import torch

from edgert.ops.shift import codes, kernels
from edgert.ops.shift.nodes import ShiftConv2d
from edgert.ops.shift.register import run_shift_conv2d
from tools.bench.report import machine, summarize, time_interleaved, write_section

SHAPES = [(32, 64), (14, 256)]  # (spatial size, channels)


def main(rounds: int = 11) -> str:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for hw, c in SHAPES:
        m = rng.choice([-1, 1], (c, c, 3, 3)) * 2 ** rng.integers(0, 4, (c, c, 3, 3))
        w = (m * 2.0 ** -6).astype(np.float32)
        packed = codes.pack(codes.encode(w, 3, False, -6), 3)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        nodes = {p: ShiftConv2d(name="s", inputs=("x", "c"), output="y", weight_shape=m.shape, padding=1,
                                bits=3, scale_exp=-6, act_bits=8, frac_bits=4, path=p)
                 for p in ("shift_add", "int_mac")}
        states = {p: {} for p in nodes}
        exps, negs = kernels.split_multipliers(m.astype(np.int32))
        xp = kernels._pad(kernels.quantize(x, 8, 4), (1, 1, 1, 1))
        acc = np.zeros((1, c, hw, hw), np.int32)

        def naive():
            acc[:] = 0
            kernels.shift_conv2d_naive(xp, exps, negs, (1, 1), (1, 1), 1, acc)

        ys = {p: run_shift_conv2d(nodes[p], [x, packed], states[p]) for p in nodes}
        assert np.array_equal(ys["shift_add"], ys["int_mac"])
        naive()
        assert np.array_equal(acc, kernels.shift_conv2d_ref(xp, m, (1, 1), (0,) * 4, (1, 1), 1, (hw, hw)))
        samples = time_interleaved({
            "torch fp32 conv": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
            "edgert shift-add": lambda: run_shift_conv2d(nodes["shift_add"], [x, packed], states["shift_add"]),
            "edgert int-mac": lambda: run_shift_conv2d(nodes["int_mac"], [x, packed], states["int_mac"]),
            "per-element shift loop": naive}, rounds=rounds)
        macs = c * c * 9 * hw * hw
        for name, mn, med, ratio in summarize(samples, "torch fp32 conv"):
            rows.append(f"| {hw}x{hw}x{c} | {name} | {mn:.3f} | {med:.3f} | {ratio:.2f}x | "
                        f"{macs / (med / 1e3) / 1e9:.1f} |")
    table = "\n".join([
        "## Shift conv layers: edgert vs torch fp32 vs a per-element shift loop",
        "",
        f"`python -m tools.bench shift` on {machine()}; batch 1, one thread, {rounds} interleaved rounds. "
        "3x3 conv, C_in = C_out, 3-bit zero-free weights, 8-bit activations; edgert times include input "
        "quantization and the float conversion. Ratio = torch median / system median (above 1 is faster "
        "than torch). G op/s counts multiply-accumulates (or shift-adds) per second.",
        "",
        "| layer | system | min ms | median ms | vs torch fp32 | G op/s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Storage: 3 bits per weight instead of 32 (10.7x smaller), the win that holds on every core.",
    ])
    write_section("shift", table)
    return table


if __name__ == "__main__":
    print(main())
