"""The C binary kernels against the NumPy reference, bit-exact: bitpack, binary_sign, binary_conv2d (float
and bits outputs, both paddings, groups, stride, an MST schedule), binary_dense, binary_max_pool2d, a
BNN chain and the digits BNN.

Graph outputs are float32, so a packed-bits value is read through a probe: a 1x1 binary conv (or dense)
whose output channel j of each group is the dot with "all +1 but channel j", plus one "all +1" channel,
so x_j = (dot_all - dot_j) / 2: equal float outputs mean equal signs, and a set padding bit would change
the dots too. Several cases share one graph (one host build) as separate outputs.

A BNN chain also runs on the emulated Cortex-M7 and M4F (QEMU), bit-exact there too. Popcount variants
(EK_POPCOUNT in kernels/binary.c): each is checked on the host here; their emulated instruction counts
(the table in binary.c) come from ``python -m tests.compilers.backends.c.test_binary cortex-m7 cortex-m4``
(``popcount_bench``: arm-none-eabi-gcc -O2, qemu-system-arm -icount).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert import ir
from edgert.compilers.backends.c.emit import emit_c
from edgert.ops.binary import bits
from edgert.ops.binary.mst import plan
from edgert.ops.binary.nodes import (BinaryConv2d, BinaryDense, BinaryMaxPool2d, BinarySign, BitPack,
                                     words)
from tests.compilers.backends.c.harness import _records, needs_cc, reference, run_c

KERNELS = Path(__file__).parents[4] / "edgert" / "compilers" / "backends" / "c" / "kernels"


class _Builder:
    """Accumulates inputs, nodes, params and outputs of one graph with many independent cases."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inputs, self.nodes, self.params, self.outputs = [], [], {}, []
        self.feeds: dict[str, np.ndarray] = {}

    def name(self, hint: str) -> str:
        return f"{hint}{len(self.nodes)}_{len(self.params)}_{len(self.inputs)}"

    def add(self, node: ir.Node) -> str:
        self.nodes.append(node)
        return node.output

    def param(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.params[name] = value
        return name

    def float_input(self, shape: tuple, batch: int = 2) -> str:
        name = self.name("x")
        x = self.rng.standard_normal((batch,) + shape).astype(np.float32)
        x.reshape(batch, -1)[:, :3] = 0.0  # sign(0) = +1
        self.inputs.append((name, ir.TensorSpec((None,) + shape)))
        self.feeds[name] = x
        return name

    def packed_input(self, c: int, h: int | None, w: int | None, groups: int = 1) -> str:
        x = self.float_input((c,) if h is None else (c, h, w))
        return self.add(BitPack(name=self.name("pack"), inputs=(x,), output=self.name("xb"), channels=c,
                                groups=groups))

    def epilogue(self, kind: str, o: int, k: int) -> tuple[str, str]:
        if kind == "float":
            return (self.param("scale", self.rng.standard_normal(o).astype(np.float32)),
                    self.param("bias", self.rng.standard_normal(o).astype(np.float32)))
        return (self.param("thr", self.rng.integers(-k // 2, k // 2 + 1, o).astype(np.int32)),
                self.param("flip", self.rng.integers(0, 2, o).astype(np.uint8)))

    def conv(self, xb: str, c: int, o: int, k, stride, padding, pad_mode: str, groups: int, kind: str,
             out_groups: int = 1, garbage: bool = False, mst: bool = False) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        wt = self.rng.standard_normal((o, c // groups, kh, kw)).astype(np.float32)
        wb = bits.pack_conv_weight(wt)
        if garbage:  # set unused high bits: the reference ignores them, so must the C code
            cg = c // groups
            if cg % 64:
                wb[..., -1] |= np.uint64(0xFFFFFFFFFFFFFFFF) << np.uint64(cg % 64)
        wname = self.param("w", wb)
        ins = (xb, wname) + self.epilogue(kind, o, kh * kw * c // groups)
        if mst:
            sched = plan(wb, kh * kw * c).arrays()
            ins += tuple(self.param(f"mst_{i}_", a) for i, a in enumerate(sched))
        return self.add(BinaryConv2d(name=self.name("conv"), inputs=ins, output=self.name("y"), in_channels=c,
                                     out_channels=o, kernel=(kh, kw), stride=stride, padding=padding,
                                     pad_mode=pad_mode, groups=groups, output_kind=kind, out_groups=out_groups))

    def dense(self, xb: str, k: int, o: int, kind: str) -> str:
        wb = bits.pack_dense_weight(self.rng.standard_normal((o, k)).astype(np.float32))
        ins = (xb, self.param("w", wb)) + self.epilogue(kind, o, k)
        return self.add(BinaryDense(name=self.name("dense"), inputs=ins, output=self.name("y"), in_features=k,
                                    out_features=o, output_kind=kind))

    def probe(self, yb: str, c: int, groups: int = 1, conv: bool = True) -> str:
        """A float readout of packed signs that determines every one of them (the module docstring)."""
        cg = c // groups
        w = np.ones((groups, cg + 1, cg), np.float32)
        w[:, np.arange(cg), np.arange(cg)] = -1
        w = w.reshape(groups * (cg + 1), cg)
        o = len(w)
        ones, zeros = self.param("one", np.ones(o, np.float32)), self.param("zero", np.zeros(o, np.float32))
        if conv:
            wb = self.param("probe", bits.pack_conv_weight(w[:, :, None, None]))
            node = BinaryConv2d(name=self.name("probe"), inputs=(yb, wb, ones, zeros), output=self.name("p"),
                                in_channels=c, out_channels=o, kernel=1, groups=groups)
        else:
            wb = self.param("probe", bits.pack_dense_weight(w))
            node = BinaryDense(name=self.name("probe"), inputs=(yb, wb, ones, zeros), output=self.name("p"),
                               in_features=c, out_features=o)
        return self.out(self.add(node))

    def out(self, name: str) -> str:
        self.outputs.append(name)
        return name

    def graph(self) -> ir.Graph:
        return ir.Graph(tuple(self.inputs), tuple(self.nodes), tuple(self.outputs), dict(self.params)).validate()


def _check(b: _Builder, tmp_path) -> ir.Graph:
    g = b.graph()
    got, want = run_c(g, b.feeds, tmp_path), reference(g, b.feeds)
    for name, gv, wv in zip(g.outputs, got, want):
        assert_array_equal(gv, wv, err_msg=name)
    return g


# C, O, H, W, kernel, stride, padding (t, l, b, r), pad_mode, groups
CONV_CASES = [
    (3, 5, 5, 6, 1, (1, 1), (0, 0, 0, 0), "one", 1),
    (3, 4, 6, 5, 3, (1, 1), (1, 1, 1, 1), "zero", 1),
    (65, 7, 7, 8, 3, (1, 1), (1, 1, 1, 1), "one", 1),
    (65, 6, 7, 8, 3, (2, 2), (1, 1, 1, 1), "zero", 1),
    (130, 66, 6, 7, 3, (1, 1), (1, 0, 2, 1), "zero", 2),
    (130, 6, 6, 7, 3, (2, 1), (0, 2, 1, 1), "one", 2),
    (128, 8, 9, 10, (2, 3), (2, 2), (1, 1, 1, 1), "one", 2),
    (6, 6, 5, 5, 3, (1, 1), (1, 1, 1, 1), "zero", 2),
    (65, 3, 6, 6, 5, (2, 2), (2, 2, 2, 2), "zero", 1),
    (5, 3, 3, 4, 3, (1, 1), (3, 3, 3, 3), "one", 1),  # windows wholly in the padding
    (12, 12, 5, 5, 3, (1, 1), (1, 1, 1, 1), "zero", 12),  # depthwise: input packed 64 channels to a word
    (70, 140, 6, 6, 3, (2, 2), (1, 1, 1, 1), "one", 70),  # depthwise, two output channels per group
    (8, 8, 3, 3, 1, (1, 1), (0, 0, 0, 0), "one", 8),  # 1x1 depthwise: the window gathered, not read in place
]


@needs_cc
def test_conv_float_and_bits(tmp_path):
    b = _Builder(1)
    for i, (c, o, h, w, k, stride, pad, mode, groups) in enumerate(CONV_CASES):
        xb = b.packed_input(c, h, w, groups)
        b.out(b.conv(xb, c, o, k, stride, pad, mode, groups, "float", garbage=i % 2 == 0))
        out_groups = o if groups == c else 2 if o % 2 == 0 and i % 3 else 1  # o: a next depthwise conv's input
        yb = b.conv(xb, c, o, k, stride, pad, mode, groups, "bits", out_groups, garbage=i % 2 == 1)
        b.probe(yb, o, out_groups)
    _check(b, tmp_path)


@needs_cc
def test_bitpack_sign_dense_pool(tmp_path):
    b = _Builder(2)
    for c, groups in ((3, 1), (65, 1), (130, 2), (130, 1), (64, 2), (70, 70)):  # 70 groups of one: dense
        b.probe(b.packed_input(c, 3, 5, groups), c, groups)  # NCHW, partial words
    for k in (3, 64, 65, 130):
        b.probe(b.packed_input(k, None, None), k, conv=False)  # [N, K]
    x = b.float_input((3, 4, 5))
    b.feeds[x].reshape(2, -1)[0, 3:6] = (np.nan, -0.0, np.inf)
    b.out(b.add(BinarySign(name=b.name("sign"), inputs=(x,), output=b.name("s"))))
    for k, o in ((3, 5), (65, 1), (130, 70), (64, 64)):
        xb = b.packed_input(k, None, None)
        b.out(b.dense(xb, k, o, "float"))
        b.probe(b.dense(xb, k, o, "bits"), o, conv=False)
    for c, h, w, k, s, pad in ((3, 6, 7, 2, 2, (0, 0, 0, 0)), (65, 7, 6, 3, 2, (1, 1, 1, 1)),
                               (130, 5, 5, 3, 1, (1, 0, 0, 1)), (70, 4, 6, (2, 3), (1, 2), (1, 1, 0, 1))):
        kernel = (k, k) if isinstance(k, int) else k
        stride = (s, s) if isinstance(s, int) else s
        yb = b.add(BinaryMaxPool2d(name=b.name("pool"), inputs=(b.packed_input(c, h, w),), output=b.name("mp"),
                                   kernel=kernel, stride=stride, padding=pad))
        b.probe(yb, c)
    _check(b, tmp_path)


@needs_cc
def test_mst_schedule_is_ignored_and_not_emitted(tmp_path):
    b = _Builder(3)
    xb = b.packed_input(70, 6, 6)
    b.out(b.conv(xb, 70, 9, 3, (1, 1), (1, 1, 1, 1), "one", 1, "float", mst=True))
    b.probe(b.conv(xb, 70, 9, 3, (2, 2), (1, 1, 1, 1), "zero", 1, "bits", mst=True), 9)
    g = _check(b, tmp_path)
    model_c = emit_c(g).files["model.c"]
    assert "mst_" not in model_c


@needs_cc
def test_bnn_chain(tmp_path):
    # bitpack -> binary conv (bits, "one" padding) -> binary max-pool -> binary conv (float, "zero" padding)
    b = _Builder(4)
    xb = b.packed_input(65, 8, 8)
    y1 = b.conv(xb, 65, 130, 3, (1, 1), (1, 1, 1, 1), "one", 1, "bits", out_groups=2)
    p = b.add(BinaryMaxPool2d(name=b.name("pool"), inputs=(y1,), output=b.name("mp"), kernel=(2, 2),
                              stride=(2, 2)))
    b.out(b.conv(p, 130, 12, 3, (1, 1), (1, 1, 1, 1), "zero", 2, "float"))
    g = _check(b, tmp_path)
    m = emit_c(g)
    assert m.arena_bytes <= 8 * 8 * 3 * 8 + 8 * 8 * 4 * 8 + 64  # packed activations, not floats


def _digits_graph():
    import torch

    from edgert.compilers.compile import import_model, optimize
    from tests.compilers.frontends.test_torch_binary import _randomize_bn
    from tools.models.binary_digits import BinaryDigits

    model = _randomize_bn(BinaryDigits())
    with torch.no_grad():
        return optimize(import_model(model, np.zeros((2, 1, 8, 8), np.float32)))


def _subgraph(g: ir.Graph, first: str, last: str) -> ir.Graph:
    """The nodes from the one producing ``first``'s input to the one producing ``last``."""
    i = next(k for k, n in enumerate(g.nodes) if n.name == first)
    j = next(k for k, n in enumerate(g.nodes) if n.name == last)
    nodes = g.nodes[i:j + 1]
    src = nodes[0].inputs[0]
    spec = g.infer_specs()[src]
    used = {v for n in nodes for v in n.inputs}
    return ir.Graph(((src, spec),), nodes, (nodes[-1].output,),
                    {k: v for k, v in g.params.items() if k in used}).validate()


@needs_cc
@pytest.mark.slow
def test_digits_bnn(tmp_path):
    """The digits BNN, optimized: its binary core (bitpack .. binary_dense) bit-exact, and the whole graph
    within float tolerance when the C backend has its float layers (conv2d, batch_norm, linear) too."""
    from edgert.compilers.backends.c.emit import supported_ops

    g = _digits_graph()
    ops = [n.op for n in g.nodes]
    assert ops.count("binary_conv2d") == 2 and "binary_max_pool2d" in ops and "binary_dense" in ops
    first = next(n.name for n in g.nodes if n.op == "bitpack")
    last = next(n.name for n in g.nodes if n.op == "binary_dense")
    rng = np.random.default_rng(5)
    core = _subgraph(g, first, last)
    (name, spec), = core.inputs
    x = rng.standard_normal((3,) + tuple(spec.shape[1:])).astype(np.float32)
    for got, want in zip(run_c(core, {name: x}, tmp_path / "core"), reference(core, {name: x})):
        assert_array_equal(got, want)
    if set(ops) <= set(supported_ops()):
        (name, spec), = g.inputs
        x = rng.standard_normal((3,) + tuple(spec.shape[1:])).astype(np.float32)
        # without sanitizers: the float kernels' own tests run them sanitized, and here it took 20 s
        for got, want in zip(run_c(g, {name: x}, tmp_path / "all", sanitize=False), reference(g, {name: x})):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---- popcount variants ----

VARIANTS = {1: "SWAR per 32-bit half", 2: "SWAR, halves merged", 3: "SWAR, byte counts accumulated",
            4: "8-bit table", 5: "16-bit table", 6: "__builtin_popcount",
            7: "SWAR, byte counts accumulated, masks in registers"}

_POPCOUNT_MAIN = r"""
#include <stdio.h>
#include "binary.h"
int main(void) {
  static uint64_t a[64], b[64];
  uint64_t s = 0x9E3779B97F4A7C15u;
  int i, n;
  for (i = 0; i < 64; i++) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17; a[i] = s;
    s ^= s << 13; s ^= s >> 7; s ^= s << 17; b[i] = i % 5 ? s : ~a[i];
  }
  for (n = 0; n <= 64; n++) printf("%u\n", (unsigned)ek_popcount_xor(a, b, n));
  for (i = 0; i < 64; i++) printf("%llu %llu\n", (unsigned long long)a[i], (unsigned long long)b[i]);
  return 0;
}
"""


@needs_cc
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_popcount_variants(tmp_path, variant):
    (tmp_path / "main.c").write_text(_POPCOUNT_MAIN)
    exe = tmp_path / "pc"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", f"-DEK_POPCOUNT={variant}",
                    "-I", str(KERNELS), str(KERNELS / "binary.c"), str(tmp_path / "main.c"), "-o", str(exe)],
                   check=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    sums = [int(v) for v in lines[:65]]
    a, b = np.array([[int(v) for v in ln.split()] for ln in lines[65:129]], np.uint64).T
    pc = np.unpackbits((a ^ b).view(np.uint8)).reshape(64, 64).sum(1)
    assert sums == [int(pc[:n].sum()) for n in range(65)]


# ---- on the emulated Cortex-M7 and M4F (QEMU): parity, and the popcount benchmark ----

C_TABLES = {  # the [c] tables of targets/stm32h7.toml (Cortex-M7) and targets/nrf52840.toml (Cortex-M4F)
    "cortex-m7": {"cflags": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
                  "machine": "mps2-an500"},
    "cortex-m4": {"cflags": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
                  "machine": "mps2-an386"},
}
needs_board = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None
    or importlib.util.find_spec("edgert.runtime.emulated") is None,
    reason="arm-none-eabi-gcc or qemu-system-arm is not installed (or no edgert.runtime.emulated yet)")


def run_board(g: ir.Graph, feeds: dict[str, np.ndarray], out_dir, cpu: str = "cortex-m7",
              extra: list[str] | None = None) -> tuple[list[np.ndarray], dict]:
    """The graph's outputs computed on the emulated core, and the board's stats."""
    from edgert.compilers.backends.c.firmware import build_firmware
    from edgert.runtime.emulated import EmulatedBoard

    model = emit_c(g)
    flags = {k: list(v) for k, v in model.flags.items()}
    flags["kernels/binary.c"] = flags.get("kernels/binary.c", []) + ["-Wall", "-Wextra", "-Werror"] + (extra or [])
    c = dict(C_TABLES[cpu], compiler="arm-none-eabi-gcc", emulator="qemu-system-arm", stack_bytes=8192)
    fw = build_firmware(model.files, c, out_dir, flags)
    board = EmulatedBoard(fw.elf, c, model.input_size, model.output_size)
    flat = board.run(_records(g, feeds))
    specs, outs, off = g.infer_specs(), [], 0
    for name in g.outputs:
        shape = tuple(1 if d is None else d for d in specs[name].shape[1:])
        size = int(np.prod(shape))
        outs.append(flat[:, off:off + size].reshape((len(flat),) + shape))
        off += size
    return outs, board.stats


def _chain_builder() -> _Builder:
    b = _Builder(6)
    xb = b.packed_input(65, 8, 8)
    y1 = b.conv(xb, 65, 130, 3, (1, 1), (1, 1, 1, 1), "one", 1, "bits", out_groups=2)
    p = b.add(BinaryMaxPool2d(name=b.name("pool"), inputs=(y1,), output=b.name("mp"), kernel=(2, 2),
                              stride=(2, 2)))
    b.out(b.conv(p, 130, 12, 3, (2, 2), (1, 1, 1, 1), "zero", 2, "float"))
    xd = b.packed_input(70, None, None)
    b.out(b.dense(xd, 70, 9, "float"))
    b.probe(b.dense(xd, 70, 66, "bits"), 66, conv=False)
    return b


@needs_board
@pytest.mark.slow
@pytest.mark.parametrize("cpu", sorted(C_TABLES))
def test_chain_on_the_emulated_core(tmp_path, cpu):
    b = _chain_builder()
    g = b.graph()
    got, _ = run_board(g, b.feeds, tmp_path, cpu)
    for gv, wv in zip(got, reference(g, b.feeds)):
        assert_array_equal(gv, wv)


def popcount_bench(out_dir, cpu: str = "cortex-m7") -> dict[int, tuple[float, float]]:
    """Per variant: emulated instructions per 64-bit word of a binary dense layer's dot products (9 words
    a row, the run of a 3x3 conv over 64 channels; the slope between 16 and 80 outputs, so the per-call
    costs cancel), and per XNOR-popcount word of a 3x3 conv, 64 -> 64 channels on 8x8, "one" padding."""
    out = {}
    for v in sorted(VARIANTS):
        counts = []
        for o in (16, 80):
            b = _Builder(7)
            b.out(b.dense(b.packed_input(576, None, None, 1), 576, o, "float"))
            _, stats = run_board(b.graph(), b.feeds, Path(out_dir) / f"d{v}_{o}", cpu, [f"-DEK_POPCOUNT={v}"])
            counts.append(stats["instructions_min"])
        dense = (counts[1] - counts[0]) / (64 * 9)
        b = _Builder(8)
        b.out(b.conv(b.packed_input(64, 8, 8), 64, 64, 3, (1, 1), (1, 1, 1, 1), "one", 1, "float"))
        _, stats = run_board(b.graph(), b.feeds, Path(out_dir) / f"c{v}", cpu, [f"-DEK_POPCOUNT={v}"])
        out[v] = (dense, stats["instructions_min"] / (64 * 64 * 9))
    return out


if __name__ == "__main__":
    import tempfile

    for cpu in sys.argv[1:] or ["cortex-m7"]:
        with tempfile.TemporaryDirectory() as d:
            for v, (dense, conv) in popcount_bench(d, cpu).items():
                print(f"{cpu} EK_POPCOUNT={v} ({VARIANTS[v]}): {dense:.1f} instructions per dense word, "
                      f"{conv:.1f} per conv word (whole model)")
