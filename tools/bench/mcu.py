"""Microcontroller footprint and cost: the reference models compiled for each MCU target, run on its
emulated core.

    python -m tools.bench mcu

Per model and board: flash and RAM measured from the linked image (arm-none-eabi-size: flash = text +
rodata + data, RAM = data + bss + stack), beside the weights' bytes and the liveness lower bound of
the activations; emulated instructions per inference (QEMU -icount with SysTick: instructions, not
cycles or time); and, for each binary and shift model, its float twin (the same layers in float32):
how much smaller and cheaper the low-bit model is. Random weights (calibrated BatchNorm statistics):
sizes and instruction counts do not depend on training, except the data-dependent event path of
the spiking model, which is fed rate-coded digits.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgert
from edgert.artifact import Artifact
from edgert.nn import BinaryConv2d, BinaryLinear
from edgert.runtime.mcu import McuRunner
from tools.bench.report import machine, write_section

BOARDS = ("stm32h7", "nrf52840")
RECORDS = 4


def _float_twin_of_binary(model: nn.Module) -> nn.Module:
    """The binary digits model with float convs and linears in place of the binary ones."""
    twin = nn.Sequential()
    for m in model.features:
        if isinstance(m, BinaryConv2d):
            t, l, b, r = m.padding  # (top, left, bottom, right); the reference model pads symmetrically
            m = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, (t, l))
        elif isinstance(m, BinaryLinear):
            m = nn.Linear(m.in_features, m.out_features)
        twin.append(m)
    return nn.Sequential(twin, model.classifier)


def models() -> list[tuple[str, str | None, nn.Module, np.ndarray]]:
    """(name, float twin's name or None, model, example input)."""
    from tools.models.binary_digits import BinaryDigits
    from tools.models.digits_cnn import DigitsCNN
    from tools.models.digits_snn import fc_snn
    from tools.models.mlperf_tiny import MODELS
    from tools.models.shift_digits import ShiftDigitsCNN, calibrated

    torch.manual_seed(0)
    digits = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    binary = calibrated(BinaryDigits(), (1, 8, 8), batch=16)
    kws, kws_shape = MODELS["kws_dscnn"]
    return [
        ("digits CNN (float)", None, calibrated(DigitsCNN(), (1, 8, 8), batch=16), digits),
        ("digits shift CNN (3-bit)", "digits CNN (float)",
         calibrated(ShiftDigitsCNN(bits=3), (1, 8, 8), batch=16), digits),
        ("digits BNN float twin", None, calibrated(_float_twin_of_binary(BinaryDigits()), (1, 8, 8), batch=16), digits),
        ("digits BNN", "digits BNN float twin", binary, digits),
        ("digits SNN 64-128-10 (per step)", None, fc_snn().eval(), (digits.reshape(1, 64) > 0.5).astype(np.float32)),
        ("MLPerf Tiny KWS DS-CNN (float)", None, kws(), np.zeros((1,) + kws_shape, np.float32)),
    ]


def measure(model, example, board: str, d: Path) -> dict:
    art = edgert.compile(model, example, target=board)
    runner = McuRunner(Artifact.read(art.save(d / "m.edgert")))
    rng = np.random.default_rng(1)
    if runner.stateful:
        x = (rng.random((RECORDS * 5, 1) + example.shape[1:]) < 0.2).astype(np.float32)
    else:
        x = rng.standard_normal((RECORDS,) + example.shape[1:]).astype(np.float32)
    runner.run(x)
    fw = art.manifest["firmware"]
    io = 4 * (fw["input_size"] + fw["output_size"])  # the caller's input and output floats
    return {"flash": fw["footprint"]["flash_bytes"], "ram": fw["footprint"]["ram_bytes"],
            "weights": fw["weight_bytes"], "arena": fw["arena_bytes"],
            "bound": fw["liveness_bytes"] + fw["state_bytes"] + io,
            "stack": fw["footprint"]["stack_bytes"], "stack_used": runner.stats["stack_high_water_bytes"],
            "instructions": statistics.median(runner.stats["instructions_per_call"])}


TFLM = Path(__file__).parent / "data" / "kws_tflm.npz"  # TF Lite Micro's run: tools/bench/tflm_kws.md


def tflm_table(d: Path) -> str:
    """edgert vs TF Lite Micro's reference kernels on the same KWS weights, inputs and emulated core."""
    from tools.models.mlperf_tiny import kws_dscnn

    ref = np.load(TFLM, allow_pickle=False)
    art = edgert.compile(kws_dscnn(), ref["x"][:1], target="stm32h7")
    runner = McuRunner(Artifact.read(art.save(d / "kws.edgert")))
    y = runner.run(ref["x"])
    fw = art.manifest["firmware"]
    ours = statistics.median(runner.stats["instructions_per_call"])
    theirs = float(np.median(ref["instructions"]))
    io = 4 * (fw["input_size"] + fw["output_size"])  # TFLM's arena holds the input and output tensors
    rows = [
        f"| TF Lite Micro (reference kernels) | {theirs:,.0f} | {int(ref['arena_bytes']):,} (input and output "
        f"inside) | {int(ref['flash_bytes']):,} | {int(ref['ram_bytes']):,} | - |",
        f"| edgert C | {ours:,.0f} ({theirs / ours:.1f}x fewer) | {fw['arena_bytes']:,} + {io:,} input/output = "
        f"{fw['arena_bytes'] + io:,} | {fw['footprint']['flash_bytes']:,} | {fw['footprint']['ram_bytes']:,} | "
        f"{float(np.abs(y - ref['y_tflm']).max()):.2g} |"]
    return "\n".join([
        "### MLPerf Tiny KWS DS-CNN against TF Lite Micro, same weights, inputs and emulated core",
        "",
        f"QEMU mps2-an500 (Cortex-M7), both built with arm-none-eabi-gcc 12.2 -O2 on the same board files. "
        f"TFLM commit {str(ref['tflm_commit'])[:12]}, reference float kernels, -DNDEBUG "
        "-DTF_LITE_STRIP_ERROR_STRINGS, arena sized to arena_used_bytes; its figures were measured once and "
        "stored in tools/bench/data/kws_tflm.npz (how: tools/bench/tflm_kws.md), edgert's in this run. "
        f"Instructions: emulated instruction count per inference, median of {len(ref['instructions'])} "
        "inputs. Max |edgert - TFLM| over the outputs (softmax probabilities).",
        "",
        "| runtime | instructions | activation memory B | flash B | RAM B | max abs diff vs TFLM |",
        "|---|---|---|---|---|---|",
        *rows])


def main() -> str:
    rows, got = [], {}
    with tempfile.TemporaryDirectory(prefix="edgert-bench-mcu-") as tmp:
        for name, twin, model, example in models():
            for board in BOARDS:
                r = got[name, board] = measure(model, example, board, Path(tmp))
                vs = ""
                if twin is not None:
                    t = got[twin, board]
                    vs = f"{t['flash'] / r['flash']:.1f}x smaller, {t['instructions'] / r['instructions']:.2f}x fewer"
                ram_bar = r["ram"] / (1.05 * r["bound"] + r["stack"])
                rows.append(f"| {name} | {board} | {r['flash']:,} | {r['weights']:,} | {r['flash'] - r['weights']:,} | "
                            f"{r['ram']:,} | {r['arena']:,} | {r['bound']:,} | {ram_bar:.2f} | {r['stack_used']:,} of "
                            f"{r['stack']:,} | {r['instructions']:,.0f} | {vs} |")
                print(rows[-1], flush=True)
        tflm = tflm_table(Path(tmp))
        print(tflm, flush=True)
    table = "\n".join([
        "## Microcontrollers: flash, RAM and emulated instructions per inference",
        "",
        f"Host {machine()}; arm-none-eabi-gcc -O2, QEMU mps2-an500 (Cortex-M7, stm32h7) and mps2-an386 "
        "(Cortex-M4F, nrf52840). Flash and RAM are measured from the linked image (arm-none-eabi-size; "
        "flash = text + rodata + data, RAM = data + bss + the reserved stack); code = flash - weights (kernels, "
        "model calls, startup and the semihosting test main); weights are the model's const arrays. The RAM "
        "bound is what any implementation must hold: the liveness lower bound on activations (the most "
        "bytes alive at one node, kernel scratch included) + the state kept across steps + the input and "
        "output floats; RAM / bar is RAM / (1.05 x bound + stack), at most 1 where the image is within 5% of "
        "it. Stack used is the painted stack's high-water mark. Instructions are an **emulated instruction count** (QEMU "
        "-icount shift=0, SysTick, 40-instruction resolution), median of "
        f"{RECORDS} random inputs (the SNN: per time step, over 20 steps of 20% input spikes), not a time on a "
        "board. Random weights with calibrated BatchNorm statistics. Regenerate: `python -m tools.bench mcu`.",
        "",
        "| model | board | flash B | weights B | code B | RAM B | arena B | RAM bound B | RAM / bar | stack used B | "
        "instructions | vs float twin (flash, instructions) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows, "", tflm])
    write_section("mcu", table)
    return table


if __name__ == "__main__":
    print(main())
