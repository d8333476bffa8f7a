"""edgert's XNOR-popcount conv vs the same conv in torch fp32 and LCE, and vs this core's measured binary peak.

    python -m tools.bench binary

LCE's four 3x3 reference layers (stride 1, +1 padding, in = out channels), batch 1, one thread. edgert
runs its binary conv with the fused threshold writing packed bits (the path between two binary layers)
and, separately, with float output; both include the padded copy of the input and the epilogue, with the
kernel variant isa.py picks for this CPU, and the bits output once more with the generic (Numba) kernels
and once with zero padding (PyTorch's, which the torch fp32 row uses). A second table runs the same
shapes as 3x3 depthwise convs (groups = channels, zero padding) against torch fp32's depthwise conv.
The ISA's micro-kernel peak is measured in the same run: the variant's register-blocked XOR-popcount
micro-kernel streaming over L1-resident words (simd.stream_peak or lanes.stream_peak, several block shapes), beside two
streaming Numba kernels (scalar POPCNT, and the bit-sliced kernel's carry-save step); peak = the fastest.

Optional third runtime, Larq Compute Engine's interpreter on the same four layers (its .tflite files
in ../shared/data/lce, BatchNorm fused into a float output), timed in a subprocess in LCE's own venv
right after each layer's edgert/torch rounds; set it up once with

    python3 -m venv build/lce-venv && build/lce-venv/bin/pip install larq-compute-engine==0.16.0 "numpy<2"

($EDGERT_LCE_PYTHON and $EDGERT_LCE_MODELS override the interpreter and the model folder).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import functools
import json
import statistics
import subprocess
from pathlib import Path

import numba
import numpy as np
import torch

from edgert.ops.binary import bits, channels, conv, isa, lanes, padding, simd, sliced
from edgert.ops.binary.bits import popcount
from tools.bench.report import machine, time_interleaved, write_section

SHAPES = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (H = W, channels), LCE's reference layers
PEAK_WORDS = 2048  # 2 x 16 KiB: stays in L1


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _stream(a, b, reps):
    total = 0
    for _ in range(reps):
        for i in range(a.size):
            total += popcount(a[i] ^ b[i])
    return total


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _stream_csa(e, w, st, reps):
    for _ in range(reps):
        sliced._count_chunk(e, w, st, sliced.LANES)
    return st[0]


# pixels x output channels (avx2) or x 8-channel vectors (avx512) of the streaming micro-kernel
PEAK_BLOCKS = {"avx2": [(2, 4), (2, 3), (3, 4), (4, 2)], "avx512": [(7, 2), (4, 2), (2, 4), (4, 4), (6, 3)]}


def _peak_fns(variant: str) -> dict:
    """Streaming XOR-popcount kernels over L1-resident words, name -> (fn, binary MACs per call): the
    variant's register-blocked micro-kernel in several block shapes, scalar POPCNT, the carry-save step."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, PEAK_WORDS, dtype=np.int64).view(np.uint64)
    b = rng.integers(0, 2**63, PEAK_WORDS, dtype=np.int64).view(np.uint64)
    reps = 200
    st = np.zeros(sliced.PLANES * sliced.LANES, np.uint64)  # the bit-sliced kernel's inner step, on 16 KiB
    csa_reps = 100
    fns = {"peak popcnt": ((lambda: _stream(a, b, reps)), PEAK_WORDS * reps * 64),
           "peak csa": ((lambda: _stream_csa(a, b[:sliced.CHUNK], st, csa_reps)),
                        csa_reps * sliced.CHUNK * sliced.LANES * 64)}
    for p, q in PEAK_BLOCKS.get(variant, []):
        stream = lanes.stream_peak if variant == "avx512" else functools.partial(simd.stream_peak, variant)
        fns[f"peak {variant} {p}x{q}"] = stream(p, q)
    return fns


LAYER_PEAK = "; on avx512 also the layer's own kernel called without its wrapper (no padding copy, no allocation)"


def _generic(fn):
    """fn run with the generic (Numba) kernels."""
    def run():
        isa.force("generic")
        try:
            return fn()
        finally:
            isa.force(None)
    return run


ROOT = Path(__file__).resolve().parents[2]
LCE_PYTHON = Path(os.environ.get("EDGERT_LCE_PYTHON", ROOT / "build/lce-venv/bin/python"))
LCE_MODELS = Path(os.environ.get("EDGERT_LCE_MODELS", ROOT.parent / "shared/data/lce"))


def _lce(hw: int, c: int, rounds: int) -> list[float] | None:
    """LCE seconds per call on the same layer, or None when its venv or model file is missing."""
    model = LCE_MODELS / f"bconv3x3_{hw}x{hw}x{c}.tflite"
    if not (LCE_PYTHON.exists() and model.exists()):
        return None
    run = subprocess.run([str(LCE_PYTHON), str(ROOT / "tools/bench/lce_runner.py"), str(rounds), str(model)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.returncode != 0:
        print(f"LCE failed on {model.name}: {run.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])[str(model)]


def _depthwise_rows() -> list[str]:
    rows = []
    for hw, c in SHAPES[:3]:
        rng = np.random.default_rng(hw)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
        xb, wb = bits.bitpack(x, c), bits.pack_conv_weight(w)
        thr, flip = rng.integers(-9, 9, c).astype(np.int32), np.zeros(c, np.uint8)
        scale, bias = np.ones(c, np.float32), np.zeros(c, np.float32)
        xt, wt = torch.from_numpy(np.sign(x) + (x == 0)), torch.from_numpy(np.sign(w) + (w == 0))
        args = (c, (1, 1), (1, 1, 1, 1), "zero", c)
        w_t, pad_corr = channels.Prepared(wb), padding.Correction(wb, 1)  # as the runtime keeps them
        fns = {"edgert bits": lambda: conv.binary_conv2d(xb, wb, *args, "bits", thr, flip, w_t=w_t, pad_corr=pad_corr),
               "edgert float": lambda: conv.binary_conv2d(xb, wb, *args, "float", scale, bias, w_t=w_t,
                                                          pad_corr=pad_corr),
               "torch fp32": lambda: torch.nn.functional.conv2d(xt, wt, padding=1, groups=c)}
        with torch.no_grad():
            samples = time_interleaved(fns, rounds=11)
        med = {k: statistics.median(v) for k, v in samples.items()}
        for name, v in samples.items():
            kind = conv.describe_kernel(wb.shape, c, c, "bits", hw) if name.startswith("edgert") else ""
            rows.append(f"| {hw}x{hw}x{c} | {name} | {kind} | {min(v) * 1e3:.3f} | {med[name] * 1e3:.3f} | "
                        f"{med['torch fp32'] / med[name]:.1f}x |")
    return rows


def main() -> str:
    torch.set_num_threads(1)
    variant = isa.variant()
    peak_fns = _peak_fns(variant)
    rows, peaks, simd_peaks = [], [], []
    for hw, c in SHAPES:
        rng = np.random.default_rng(hw)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        xb, wb = bits.bitpack(x), bits.pack_conv_weight(w)
        thr = rng.integers(-9 * c, 9 * c, c).astype(np.int32)
        flip = np.zeros(c, np.uint8)
        scale, bias = np.ones(c, np.float32), np.zeros(c, np.float32)
        xt, wt = torch.from_numpy(np.sign(x) + (x == 0)), torch.from_numpy(np.sign(w) + (w == 0))
        args = (c, (1, 1), (1, 1, 1, 1), "one", 1)
        zero_args = (c, (1, 1), (1, 1, 1, 1), "zero", 1)  # PyTorch's padding, as torch fp32 runs it here
        w_t = conv.transpose_weight(wb)  # the runtime keeps these per node
        pad_corr = padding.Correction(wb, c)
        prepared = sliced.prepare(wb, c, thr, flip)
        simd_w = conv.simd_weights(wb, 1) if conv.simd_kind(wb.shape, 1) else None
        layer_peak = dict(peak_fns)
        if isinstance(simd_w, lanes.Prepared):  # the layer's own kernel without its wrapper (no padding copy,
            xp = np.zeros((1, hw + 2, hw + 2, xb.shape[-1]), np.uint64)  # allocation or epilogue set-up)
            xp[:, 1:-1, 1:-1] = xb
            layer_peak[f"peak {variant} layer kernel"] = (simd_w.bound_bits(xp, (1, 1), hw, hw, 9 * c, thr, flip),
                                                          hw * hw * c * c * 9)
        fns = {name: fn for name, (fn, _) in layer_peak.items()}
        fns.update({
            "edgert bits": lambda: conv.binary_conv2d(xb, wb, *args, "bits", thr, flip, w_t=w_t, prepared=prepared,
                                                      simd_w=simd_w),
            "edgert float": lambda: conv.binary_conv2d(xb, wb, *args, "float", scale, bias, w_t=w_t, simd_w=simd_w),
            "edgert bits, zero padding": lambda: conv.binary_conv2d(xb, wb, *zero_args, "bits", thr, flip, w_t=w_t,
                                                                    prepared=prepared, simd_w=simd_w, pad_corr=pad_corr),
            "edgert bits, generic": _generic(lambda: conv.binary_conv2d(xb, wb, *args, "bits", thr, flip, w_t=w_t,
                                                                        prepared=prepared)),
            "torch fp32": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
        })
        with torch.no_grad():
            samples = time_interleaved(fns, rounds=11)
        lce = _lce(hw, c, 11)
        if lce is not None:
            samples["LCE 0.16 float"] = lce
        med = {k: statistics.median(v) for k, v in samples.items()}
        best = {k: min(v) for k, v in samples.items()}
        rates = {name: macs / med[name] for name, (_, macs) in layer_peak.items()}
        peak = max(rates.values())
        peaks.append((peak, max(rates, key=rates.get)))
        simd_peaks.append(max([r for k, r in rates.items() if variant in k], default=0.0))
        macs = hw * hw * c * c * 9
        kernels = {"edgert bits": conv.describe_kernel(wb.shape, c, 1, "bits", hw),
                   "edgert float": conv.describe_kernel(wb.shape, c, 1, "float", hw)}
        kernels["edgert bits, zero padding"] = kernels["edgert bits"]
        isa.force("generic")
        kernels["edgert bits, generic"] = conv.describe_kernel(wb.shape, c, 1, "bits", hw)
        isa.force(None)
        for name in [k for k in samples if not k.startswith("peak")]:
            rate = macs / med[name]
            lce_ratio = f"{med['LCE 0.16 float'] / med[name]:.1f}x" if lce is not None else "-"
            rows.append(f"| {hw}x{hw}x{c} | {name} | {kernels.get(name, '')} | {best[name] * 1e3:.3f} | {med[name] * 1e3:.3f} | "
                        f"{rate / 1e9:.1f} | {rate / peak * 100:.1f}% | {med['torch fp32'] / med[name]:.1f}x | "
                        f"{lce_ratio} |")
    peak_g = [p / 1e9 for p, _ in peaks]
    md = "\n".join([
        f"## Binary 3x3 conv (LCE's reference layers), {variant} kernels",
        "",
        f"{machine()}; {isa.describe()}; batch 1, one thread; stride 1, +1 padding (torch fp32, and the row "
        "saying so, zero padding), in = out channels. "
        "MAC/s counts binary MACs for edgert and fp32 MACs for torch (the same conv on +-1 floats). "
        "ISA peak: the fastest streaming XOR-popcount kernel over L1-resident words measured in the same rounds "
        f"as each layer: the {variant} register-blocked micro-kernel (block shapes {PEAK_BLOCKS.get(variant)}, median of its best "
        f"{statistics.median(simd_peaks) / 1e9:.0f} G binary MAC/s), scalar POPCNT and the bit-sliced carry-save "
        f"step in Numba{LAYER_PEAK if variant == 'avx512' else ''}; peak median {statistics.median(peak_g):.0f} (range {min(peak_g):.0f}-{max(peak_g):.0f}; "
        f"fastest: {', '.join(sorted({n for _, n in peaks}))}). \"of ISA peak\" is the row's median rate over "
        "its layer's peak. The kernel column names what conv.kernel_kind picks (the SIMD variant and its "
        "register block in output pixels x output channels, or a generic Numba kernel; on avx2 below 256 channels "
        "the SIMD records would be part-filled); "
        "\"edgert bits, generic\" forces the generic kernels. LCE: its interpreter (indirect BGEMM, one thread) on LCE's own model of the "
        "layer, run in a subprocess right after the other rows (omitted when its venv is missing; see "
        "tools/bench/binary.py).",
        "",
        "| layer | runtime | kernel | min ms | median ms | G MAC/s (median) | of ISA peak | vs torch fp32 | vs LCE |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"3x3 depthwise binary conv (groups = channels, zero padding), same CPU and {variant} variant; edgert's "
        "input packed one group per word as its graphs pass it, both outputs; torch fp32 is "
        "`conv2d(groups=channels)` on +-1 floats. 11 interleaved rounds.",
        "",
        "| layer | runtime | kernel | min ms | median ms | vs torch fp32 (median) |",
        "|---|---|---|---|---|---|",
        *_depthwise_rows(),
    ])
    write_section(f"binary-{variant}", md)  # one table per ISA variant: the machines change between runs
    return md


if __name__ == "__main__":
    print(main())
