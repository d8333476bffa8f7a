"""Run a Cortex-M firmware ELF (compilers/backends/c/firmware.py) on an emulated board, qemu-system-arm.

The ELF's test main (board/main.c) reads ``input.bin`` through semihosting, runs the model once per
record and writes ``output.bin``, ``calls.bin`` and ``stats.bin``; this module writes the one, reads
the others, and turns QEMU's exit code into a message. ``-icount shift=0`` makes QEMU advance its virtual clock by
exactly one nanosecond per executed instruction, so SysTick counts are repeatable and convert to
*emulated instructions*. They are not cycles, and not time on a real chip.
"""

import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgert.errors import EdgertError, InputError

# Executed instructions per SysTick tick (SysTick on the processor clock), per QEMU machine.
# Measured with QEMU 7.2 and -icount shift=0 by timing a hand-written `subs; bne` loop of 2 * 10^6
# instructions in the firmware's own timed call (tests/compilers/backends/c/test_firmware.py,
# test_systick_calibration, which checks these): 50,000 ticks on both machines. Why 40: icount runs
# the virtual clock at 1 GHz, and both mps2 machines clock the core at 25 MHz.
INSTRUCTIONS_PER_TICK = {"mps2-an500": 40, "mps2-an386": 40}

STATS = struct.Struct("<4I4Q4I")  # struct edgert_stats in board/main.c
STATS_MAGIC = 0x53474445  # "EDGS"

# QEMU's exit code is the firmware's (board/main.c, board/startup.c).
EXIT_CODES = {
    1: "the firmware stopped with an error the semihosting exit could not report in detail",
    2: "the firmware could not open input.bin",
    3: "input.bin is shorter than its record count says",
    4: "the firmware could not write output.bin or stats.bin",
    5: "the model returned a nonzero code",
    6: "the stack overflowed (it reached its limit, or went past it into the MPU guard); raise "
       "stack_bytes in the target's [c] table",
}
FAULTS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault", 11: "SVCall",
          12: "DebugMonitor", 14: "PendSV"}


class EmulatedBoard:
    """A firmware ELF on QEMU: ``run(x)`` feeds each record of x to the model, returns the outputs.

    ``c`` is the target's [c] table (``emulator``, ``machine``, optionally ``instructions_per_tick``);
    ``input_size`` and ``output_size`` are the model's EDGERT_INPUT_SIZE / EDGERT_OUTPUT_SIZE.

    After a run, ``stats`` is a dict of what the board measured, counts in emulated instructions
    (multiples of ``instructions_per_tick``, the SysTick resolution):

    - ``records``: model calls made; ``instructions_per_call``: a list, one count per call;
    - ``instructions_first`` (the cold call after reset), ``_min``, ``_max``, ``_total``, ``_mean``;
    - ``stack_high_water_bytes`` (deepest since reset, startup and main included), ``stack_bytes``;
    - ``rc``: the first nonzero return of edgert_model_run, else 0;
    - ``host_seconds``: wall-clock of the QEMU process on the host, start-up included (not board time).
    """

    def __init__(self, elf: bytes, c: dict, input_size: int, output_size: int,
                 timeout: float = 120.0):
        self.elf = bytes(elf)
        self.emulator = c.get("emulator", "qemu-system-arm")
        self.machine = c.get("machine")
        self.input_size = int(input_size)
        self.output_size = int(output_size)
        self.timeout = timeout
        self.stats: dict = {}
        if self.elf[:4] != b"\x7fELF":
            raise EdgertError("EmulatedBoard: elf is not an ELF file; pass Firmware.elf from "
                              "edgert.compilers.backends.c.firmware.build_firmware")
        if not self.machine:
            raise EdgertError('the target\'s [c] table has no machine, e.g. machine = "mps2-an500"')
        self.instructions_per_tick = c.get("instructions_per_tick",
                                           INSTRUCTIONS_PER_TICK.get(self.machine))
        if self.instructions_per_tick is None:
            raise EdgertError(f"no SysTick calibration for machine {self.machine!r} (known: "
                              f"{', '.join(INSTRUCTIONS_PER_TICK)}); add instructions_per_tick to "
                              "the target's [c] table, measured as in edgert/runtime/emulated.py")
        if shutil.which(self.emulator) is None:
            raise EdgertError(f"{self.emulator} is not on PATH: the emulated board needs it; install "
                              "it with `apt-get install qemu-system-arm`, or run "
                              "`bash tools/board/setup_mcu.sh` as root (`make test` does)")

    def command(self) -> list[str]:
        """The QEMU command line, run in a folder holding main.elf and input.bin."""
        return [self.emulator, "-M", self.machine, "-nographic",
                "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
                "-kernel", "main.elf"]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs [N, output_size] float32 for x [N, ...] float32; one model call per record."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise InputError(f"EmulatedBoard.run: x is {x.dtype}; pass float32 (x.astype(np.float32))")
        if x.ndim < 1 or int(np.prod(x.shape[1:])) != self.input_size:
            raise InputError(f"EmulatedBoard.run: x has shape {x.shape}; it needs [N, ...] with "
                             f"{self.input_size} floats per record")
        n = x.shape[0]
        with tempfile.TemporaryDirectory(prefix="edgert-board-") as tmp:
            d = Path(tmp)
            (d / "main.elf").write_bytes(self.elf)
            (d / "input.bin").write_bytes(struct.pack("<I", n) + x.astype("<f4").tobytes())
            start = time.perf_counter()
            try:
                proc = subprocess.run(self.command(), cwd=d, stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=self.timeout)
            except subprocess.TimeoutExpired as e:
                raise EdgertError(
                    f"the emulated board ({self.machine}) did not finish in {self.timeout} s: the "
                    "model may need more emulated time than that (pass a larger timeout), or the "
                    f"firmware hung{_stderr(e)}") from None
            seconds = time.perf_counter() - start
            stats = self._read_stats(d, seconds)
            if proc.returncode != 0:
                raise EdgertError(self._explain(proc, stats))
            if stats is None:
                raise EdgertError("the emulated board exited 0 but wrote no valid stats.bin: is the "
                                  f"ELF built by build_firmware (board/main.c)?{_stderr(proc)}")
            out = self._read_output(d / "output.bin", n, proc)
        self.stats = stats
        return out

    def _read_stats(self, d: Path, seconds: float) -> dict | None:
        path = d / "stats.bin"
        if not path.exists() or path.stat().st_size != STATS.size:
            return None
        (magic, _version, records, rc, first, lo, hi, total, high_water, stack, _in, _out
         ) = STATS.unpack(path.read_bytes())
        if magic != STATS_MAGIC:
            return None
        k = self.instructions_per_tick
        calls = np.fromfile(d / "calls.bin", dtype="<u8") if (d / "calls.bin").exists() else []
        return {"records": records, "instructions_per_call": [int(t) * k for t in calls],
                "instructions_first": first * k, "instructions_min": lo * k,
                "instructions_max": hi * k, "instructions_total": total * k,
                "instructions_mean": total * k / records if records else 0.0,
                "instructions_per_tick": k, "stack_high_water_bytes": high_water,
                "stack_bytes": stack, "rc": rc, "host_seconds": seconds}

    def _read_output(self, path: Path, n: int, proc: subprocess.CompletedProcess) -> np.ndarray:
        expected = n * self.output_size * 4
        if not path.exists() or path.stat().st_size != expected:
            got = path.stat().st_size if path.exists() else "no file"
            raise EdgertError(f"the emulated board exited 0 but output.bin holds {got} bytes, not "
                              f"{expected} ({n} records of {self.output_size} floats): is the ELF "
                              f"built for a model of this output size?{_stderr(proc)}")
        return np.fromfile(path, dtype="<f4").astype(np.float32).reshape(n, self.output_size)

    def _explain(self, proc: subprocess.CompletedProcess, stats: dict | None) -> str:
        code = proc.returncode
        if code >= 0x80 and code - 0x80 in FAULTS:
            what = f"the firmware took a {FAULTS[code - 0x80]} (exception {code - 0x80})"
        elif code == 5 and stats is not None:
            what = f"the model returned {stats['rc']} at record {stats['records'] - 1}"
        elif code in EXIT_CODES:
            what = EXIT_CODES[code]
        else:
            what = "QEMU failed (is the machine name right? is the ELF for this core?)"
        return f"the emulated board ({self.emulator} -M {self.machine}) exited {code}: {what}" \
               f"{_stderr(proc)}"


def _stderr(proc: subprocess.CompletedProcess | subprocess.TimeoutExpired) -> str:
    text = (proc.stderr or b"").decode(errors="replace").strip()
    return f"\nQEMU stderr:\n{text[-4000:]}" if text else ""
