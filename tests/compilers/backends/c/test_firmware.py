"""Cortex-M firmware: hand-written model C code, linked with board/, run on QEMU's mps2 boards.

The models here are fixtures written by hand to the C backend's contract (model.h macros and the
edgert_model_* API), so the board, the linker script and the emulator are tested on their own.
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from edgert.compilers.backends.c.firmware import Footprint, build_firmware, check_fits
from edgert.errors import EdgertError, InputError
from edgert.runtime.emulated import INSTRUCTIONS_PER_TICK, EmulatedBoard

# The [c] tables of the Cortex-M7 (stm32h7) and Cortex-M4F (nrf52840) targets.
C_TABLES = {
    "mps2-an500": {"compiler": "arm-none-eabi-gcc", "emulator": "qemu-system-arm",
                   "cflags": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
                   "machine": "mps2-an500", "stack_bytes": 8192},
    "mps2-an386": {"compiler": "arm-none-eabi-gcc", "emulator": "qemu-system-arm",
                   "cflags": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
                   "machine": "mps2-an386", "stack_bytes": 8192},
}
MACHINES = list(C_TABLES)

needs_toolchain = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
    reason="arm-none-eabi-gcc or qemu-system-arm is not installed; `make test` installs them "
           "(tools/board/setup_mcu.sh)")


def model_h(n_in: int, n_out: int, arena: int = 0, state: int = 0) -> str:
    return f"""#ifndef MODEL_H
#define MODEL_H
#define EDGERT_INPUT_SIZE {n_in}
#define EDGERT_OUTPUT_SIZE {n_out}
#define EDGERT_ARENA_BYTES {arena}u
#define EDGERT_STATE_BYTES {state}
#define EDGERT_STATEFUL {int(state > 0)}
int edgert_model_run(const float *input, float *output);
int edgert_model_step(const float *input, float *output);
void edgert_model_reset(void);
#endif
"""


STEP_AND_RESET = """
int edgert_model_step(const float *input, float *output) { return edgert_model_run(input, output); }
void edgert_model_reset(void) {}
"""

# y = SCALE * x + 1 over 10 floats, through a kernel in kernels/ and the arena. The 1 is a non-const
# static (in .data), so a wrong .data copy at reset shows in the output.
AFFINE = {
    "model.h": model_h(10, 10, arena=40),
    "kernels/edgert_kernels.h": "void ek_affine(const float *x, float *y, int n, float a, float b);\n",
    "kernels/float.c": """#include "edgert_kernels.h"
void ek_affine(const float *x, float *y, int n, float a, float b)
{
    for (int i = 0; i < n; i++) y[i] = a * x[i] + b;
}
""",
    "model.c": """#include "model.h"
#include "kernels/edgert_kernels.h"
#ifndef SCALE
#define SCALE 2.0f
#endif
static float arena[EDGERT_ARENA_BYTES / 4] __attribute__((aligned(8)));
static volatile float bias = 1.0f;
int edgert_model_run(const float *input, float *output)
{
    ek_affine(input, arena, EDGERT_INPUT_SIZE, SCALE, bias);
    for (int i = 0; i < EDGERT_OUTPUT_SIZE; i++) output[i] = arena[i];
    return 0;
}
""" + STEP_AND_RESET,
}

# Accumulates x across steps: y_t = x_1 + ... + x_t. The state starts at 100 in .data, so only a
# call of edgert_model_reset before the first record gives the plain cumulative sum.
STATEFUL = {
    "model.h": model_h(4, 4, state=16),
    "model.c": """#include "model.h"
static float state[4] = {100.0f, 100.0f, 100.0f, 100.0f};
int edgert_model_step(const float *input, float *output)
{
    for (int i = 0; i < 4; i++) output[i] = state[i] += input[i];
    return 0;
}
int edgert_model_run(const float *input, float *output) { return edgert_model_step(input, output); }
void edgert_model_reset(void) { for (int i = 0; i < 4; i++) state[i] = 0.0f; }
""",
}

# A `subs; bne` loop of LOOPS iterations: exactly 2 * LOOPS instructions inside the timed call.
LOOP = {
    "model.h": model_h(1, 1),
    "model.c": """#include <stdint.h>
#include "model.h"
int edgert_model_run(const float *input, float *output)
{
    uint32_t n = LOOPS;
    __asm__ volatile("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n));
    output[0] = input[0];
    return 0;
}
""" + STEP_AND_RESET,
}

EMPTY = {
    "model.h": model_h(1, 1),
    "model.c": """#include "model.h"
int edgert_model_run(const float *input, float *output) { (void)input; (void)output; return 0; }
""" + STEP_AND_RESET,
}

# Fails (returns 7) when a record's first float is negative.
FAILING = {
    "model.h": model_h(1, 1),
    "model.c": """#include "model.h"
int edgert_model_run(const float *input, float *output) { output[0] = input[0]; return input[0] < 0 ? 7 : 0; }
""" + STEP_AND_RESET,
}

# Recursion as deep as the input says, 64+ bytes a level: deep enough overflows the 8 KB stack.
DEEP = {
    "model.h": model_h(1, 1),
    "model.c": """#include "model.h"
static int deep(volatile int n)
{
    volatile char pad[64];
    pad[0] = (char)n;
    return n == 0 ? pad[0] : deep(n - 1) + pad[0];
}
int edgert_model_run(const float *input, float *output)
{
    output[0] = (float)deep((int)input[0]);
    return 0;
}
""" + STEP_AND_RESET,
}


HANG = {
    "model.h": model_h(1, 1),
    "model.c": """#include "model.h"
int edgert_model_run(const float *input, float *output)
{
    (void)input;
    (void)output;
    __asm__ volatile("b ."); /* spin forever */
    return 0;
}
""" + STEP_AND_RESET,
}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(sources, machine, **kw) -> Firmware, each in its own folder; repeats come from a cache."""
    cache = {}

    def _build(sources, machine="mps2-an500", c=None, **kw):
        c = c or C_TABLES[machine]
        key = (machine, repr(sorted(sources.items())), repr(c), repr(kw))
        if key not in cache:
            cache[key] = build_firmware(sources, c, tmp_path_factory.mktemp(machine), **kw)
        return cache[key]
    return _build


def board(fw, machine="mps2-an500"):
    return EmulatedBoard(fw.elf, C_TABLES[machine], fw.macros["EDGERT_INPUT_SIZE"],
                         fw.macros["EDGERT_OUTPUT_SIZE"], timeout=30)


@needs_toolchain
@pytest.mark.parametrize("machine", MACHINES)
def test_affine_matches_numpy(build, machine):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 2, 5)).astype(np.float32)  # [N, ...] with 10 floats a record
    b = board(build(AFFINE, machine), machine)
    y = b.run(x)
    assert y.dtype == np.float32 and y.shape == (7, 10)
    assert_array_equal(y, 2 * x.reshape(7, 10) + 1)  # 2x is exact, so FMA or not, bit for bit
    assert b.stats["records"] == 7 and b.stats["rc"] == 0
    assert 0 < b.stats["instructions_min"] <= b.stats["instructions_max"]
    assert b.stats["instructions_total"] >= 7 * b.stats["instructions_min"]
    assert 0 < b.stats["stack_high_water_bytes"] < b.stats["stack_bytes"] == 8192


@needs_toolchain
@pytest.mark.parametrize("machine", MACHINES)
def test_stateful_model_keeps_state_across_records_and_resets(build, machine):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    b = board(build(STATEFUL, machine), machine)
    expected = np.add.accumulate(x, axis=0, dtype=np.float32)  # sequential float32 sums, as in C
    assert_array_equal(b.run(x), expected)
    assert_array_equal(b.run(x), expected)  # each run starts from reset again
    assert_array_equal(b.run(x[:1]), x[:1])


@needs_toolchain
@pytest.mark.parametrize("machine", MACHINES)
def test_systick_calibration(build, machine):
    """2 * 10^6 instructions in the timed call read as 2 * 10^6 emulated instructions (to one tick)."""
    loops = 1_000_000
    fw = build({**LOOP, "model.c": LOOP["model.c"].replace("LOOPS", str(loops))}, machine)
    b = board(fw, machine)
    b.run(np.zeros((3, 1), np.float32))
    k = INSTRUCTIONS_PER_TICK[machine]
    assert b.stats["instructions_per_tick"] == k == 40
    # The timing reads and the call itself add a few instructions: less than one tick.
    assert 2 * loops <= b.stats["instructions_min"] <= 2 * loops + k
    assert b.stats["instructions_max"] <= 2 * loops + 2 * k
    calls = b.stats["instructions_per_call"]
    assert len(calls) == 3 and min(calls) == b.stats["instructions_min"] and sum(calls) == b.stats[
        "instructions_total"] and calls[0] == b.stats["instructions_first"]


@needs_toolchain
def test_footprint_agrees_with_arm_none_eabi_size(build):
    fw = build(AFFINE)
    fp = fw.footprint
    # Berkeley format: text (code, rodata, exidx), data, bss (.bss and the NOLOAD .stack).
    line = subprocess.run(["arm-none-eabi-size", str(fw.path)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1]
    text, data, bss = (int(v) for v in line.split()[:3])
    assert fp.flash_bytes == text + data
    assert fp.ram_bytes == data + bss
    assert fp.sections[".data"] >= 4  # the bias
    assert fp.arena_bytes == 40 and fp.sections[".bss"] >= fp.arena_bytes
    assert fp.stack_bytes == fp.sections[".stack"] == 8192
    assert fw.elf == fw.path.read_bytes()
    small = build(AFFINE, c={**C_TABLES["mps2-an500"], "stack_bytes": 2048}).footprint
    assert small.stack_bytes == 2048 and small.ram_bytes == fp.ram_bytes - 6144


@needs_toolchain
@pytest.mark.parametrize("machine", MACHINES)
def test_board_alone_is_small(build, machine):
    """startup + main + semihosting around an empty model: no stdio, so about 1.6 KB of flash."""
    fw = build(EMPTY, machine)
    assert fw.footprint.flash_bytes < 2048
    assert fw.footprint.ram_bytes - fw.footprint.stack_bytes < 256
    b = board(fw, machine)
    assert b.run(np.zeros((0, 1), np.float32)).shape == (0, 1)
    assert b.stats["records"] == 0


@needs_toolchain
def test_file_flags_reach_only_their_file(build):
    fw = build(AFFINE, file_flags={"model.c": ["-DSCALE=3.0f"], "kernels/spiking.c": ["-O0"]})
    x = np.arange(10, dtype=np.float32).reshape(1, 10)
    assert_array_equal(board(fw).run(x), 3 * x + 1)
    bad = build(AFFINE, file_flags={"kernels/float.c": ["-DSCALE=oops"]})  # unused there: no error
    assert_array_equal(board(bad).run(x), 2 * x + 1)


@needs_toolchain
def test_compile_error_shows_the_compilers_message(build):
    broken = {**EMPTY, "model.c": EMPTY["model.c"].replace("return 0;", "return zero;")}
    with pytest.raises(EdgertError, match=r"failed to compile model\.c(.|\n)*'zero' undeclared"):
        build(broken)


@needs_toolchain
def test_model_error_code_and_faults_are_reported(build):
    b = board(build(FAILING))
    with pytest.raises(EdgertError, match="exited 5: the model returned 7 at record 2"):
        b.run(np.array([[1.0], [2.0], [-1.0], [3.0]], np.float32))
    b = board(build(DEEP))
    assert_array_equal(b.run(np.array([[3.0]], np.float32)), [[6.0]])
    with pytest.raises(EdgertError, match=r"exited 6: the stack overflowed(.|\n)*QEMU stderr:"
                                          r"(.|\n)*below the stack's limit"):
        b.run(np.array([[1000.0]], np.float32))


@needs_toolchain
def test_a_hung_firmware_times_out(build):
    fw = build(HANG)
    b = EmulatedBoard(fw.elf, C_TABLES["mps2-an500"], 1, 1, timeout=1.0)
    with pytest.raises(EdgertError, match="did not finish in 1.0 s"):
        b.run(np.zeros((1, 1), np.float32))


@needs_toolchain
def test_run_checks_the_input(build):
    b = board(build(AFFINE))
    with pytest.raises(InputError, match="float32"):
        b.run(np.zeros((1, 10)))
    with pytest.raises(InputError, match="10 floats per record"):
        b.run(np.zeros((1, 11), np.float32))


def test_check_fits_says_how_much_is_over():
    fp = Footprint(flash_bytes=3_000_000, ram_bytes=1_100_000, arena_bytes=1_000_000,
                   stack_bytes=8192, sections={})
    check_fits(fp, flash_bytes=4_000_000, ram_bytes=2_000_000)  # fits: no error
    with pytest.raises(EdgertError) as e:
        check_fits(fp, flash_bytes=2_097_152, ram_bytes=1_048_576)
    msg = str(e.value)
    assert "flash 3,000,000 B is 902,848 B over the 2,097,152 B limit" in msg
    assert "RAM 1,100,000 B is 51,424 B over the 1,048,576 B limit (arena 1,000,000 B" in msg
    assert "shift or binary model" in msg and "smaller input" in msg
    with pytest.raises(EdgertError, match="RAM") as e:
        check_fits(fp, flash_bytes=4_000_000, ram_bytes=1_048_576)
    assert "flash" not in str(e.value).split(". Try")[0]


def test_missing_toolchain_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no arm-none-eabi-gcc, no qemu
    with pytest.raises(EdgertError, match=r"arm-none-eabi-gcc is not on PATH(.|\n)*"
                                          r"gcc-arm-none-eabi libnewlib-arm-none-eabi"
                                          r"(.|\n)*tools/board/setup_mcu\.sh"):
        build_firmware(EMPTY, C_TABLES["mps2-an500"], tmp_path / "out")
    with pytest.raises(EdgertError, match=r"qemu-system-arm is not on PATH(.|\n)*setup_mcu\.sh"):
        EmulatedBoard(b"\x7fELF", C_TABLES["mps2-an386"], 1, 1)


def test_emulated_board_does_not_import_torch():
    code = ("import sys, edgert.runtime.emulated, edgert.compilers.backends.c.firmware; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
