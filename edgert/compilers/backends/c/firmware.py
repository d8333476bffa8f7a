"""Link generated model C code with board/ into a Cortex-M firmware ELF, and measure its footprint.

The target's ``[c]`` table, passed as a plain dict::

    compiler = "arm-none-eabi-gcc"
    cflags = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]
    emulator = "qemu-system-arm"   # edgert.runtime.emulated
    machine = "mps2-an500"
    stack_bytes = 8192

Every file is compiled at -O2 with one section per function and per object, and linked with
--gc-sections, so what the model does not call costs no flash. The image links newlib-nano's libc and
libm (``-lm``) but no stdio and no rdimon: the board talks to the host through raw semihosting.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgert.errors import EdgertError, TargetError

BOARD = Path(__file__).with_name("board")
BOARD_FILES = ("startup.c", "main.c", "semihost.h")
# nano.specs on every step: newlib-nano's headers when compiling, its libc (and libm) when linking.
OPT_FLAGS = ["-O2", "-ffunction-sections", "-fdata-sections", "--specs=nano.specs"]
LINK_FLAGS = ["-nostartfiles", "-Wl,--gc-sections"]
DEFAULT_STACK_BYTES = 8192
# Allocated sections of the image (mem.ld.in), by where they live. .data is in both: its initial
# values are stored in flash and copied to RAM at reset.
FLASH_SECTIONS = (".text", ".rodata", ".ARM.exidx", ".data")
RAM_SECTIONS = (".stack", ".data", ".bss")
SETUP = ("install them with `apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
         "qemu-system-arm`, or run `bash tools/board/setup_mcu.sh` as root (`make test` does)")


@dataclass(frozen=True)
class Footprint:
    """What the image needs on the chip, from ``arm-none-eabi-size -A``, in bytes."""

    flash_bytes: int  # .text + .rodata + .ARM.exidx + .data
    ram_bytes: int  # .stack + .data + .bss
    arena_bytes: int  # EDGERT_ARENA_BYTES of model.h: the activations, inside .bss
    stack_bytes: int  # the fixed .stack region
    sections: dict[str, int]  # every allocated section, as `size -A` listed it


@dataclass(frozen=True)
class Firmware:
    """A linked ELF for the target's [c] table, with its footprint."""

    elf: bytes
    footprint: Footprint
    macros: dict[str, int]  # the numeric EDGERT_* macros of model.h
    path: Path  # main.elf in out_dir, beside the sources it was built from


def build_firmware(sources: dict[str, str], c: dict, out_dir: str | Path,
                   file_flags: dict[str, list[str]] | None = None) -> Firmware:
    """Write ``sources`` and board/ into ``out_dir``, compile and link them into ``main.elf``.

    ``sources`` maps relative paths ("model.c", "model.h", "kernels/float.c", ...) to text; ``c`` is
    the target's [c] table. ``file_flags`` adds flags for one file, after the common ones, keyed by
    the same relative path (board files as "board/main.c"); keys of files not in the build are
    ignored, so one fixed table serves every model, e.g. ``{"kernels/spiking.c":
    ["-ffp-contract=off"]}`` where bit-exactness with the host needs unfused multiply-adds.
    """
    file_flags = file_flags or {}
    compiler, cflags, stack_bytes = _read_c_table(c)
    size_tool = _find_tools(compiler)
    if "model.h" not in sources:
        raise EdgertError(f"build_firmware: sources has no model.h (got {sorted(sources)}); "
                          "board/main.c includes it for the EDGERT_* sizes and the API")
    macros = parse_macros(sources["model.h"])

    out = Path(out_dir)
    for rel, text in sources.items():
        path = out / _relative(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (out / "board").mkdir(parents=True, exist_ok=True)
    for name in BOARD_FILES:
        shutil.copyfile(BOARD / name, out / "board" / name)
    ld = out / "board" / "mem.ld"
    ld.write_text((BOARD / "mem.ld.in").read_text().replace("@STACK_BYTES@", str(stack_bytes)))

    units = [rel for rel in sources if rel.endswith(".c")] + [f"board/{n}" for n in BOARD_FILES
                                                              if n.endswith(".c")]
    # not -I kernels: kernels/float.h would shadow the C library's <float.h>
    includes = ["-I", str(out), "-I", str(out / "board")]
    (out / "obj").mkdir(exist_ok=True)
    objects = []
    for rel in units:
        obj = out / "obj" / (rel.replace("/", "__")[:-2] + ".o")
        _run([compiler, *cflags, *OPT_FLAGS, *includes, *file_flags.get(rel, []), "-c",
              str(out / rel), "-o", str(obj)], f"{compiler} failed to compile {rel}")
        objects.append(str(obj))
    elf = out / "main.elf"
    _run([compiler, *cflags, *OPT_FLAGS, *LINK_FLAGS, "-T", str(ld), *objects, "-lm", "-o", str(elf)],
         f"{compiler} failed to link the firmware")

    sections = section_sizes(_run([size_tool, "-A", str(elf)], f"{size_tool} failed on main.elf"))
    footprint = Footprint(
        flash_bytes=sum(sections.get(s, 0) for s in FLASH_SECTIONS),
        ram_bytes=sum(sections.get(s, 0) for s in RAM_SECTIONS),
        arena_bytes=macros["EDGERT_ARENA_BYTES"],
        stack_bytes=sections.get(".stack", 0),
        sections=sections)
    return Firmware(elf=elf.read_bytes(), footprint=footprint, macros=macros, path=elf)


def check_fits(footprint: Footprint, flash_bytes: int | None, ram_bytes: int | None) -> None:
    """Raise one EdgertError saying by how much the image is over each limit, if it is (None: no limit)."""
    over = []
    if flash_bytes is not None and footprint.flash_bytes > flash_bytes:
        over.append(f"flash {footprint.flash_bytes:,} B is {footprint.flash_bytes - flash_bytes:,} B "
                    f"over the {flash_bytes:,} B limit (weights and code)")
    if ram_bytes is not None and footprint.ram_bytes > ram_bytes:
        over.append(f"RAM {footprint.ram_bytes:,} B is {footprint.ram_bytes - ram_bytes:,} B over the "
                    f"{ram_bytes:,} B limit (arena {footprint.arena_bytes:,} B, "
                    f"stack {footprint.stack_bytes:,} B)")
    if over:
        raise EdgertError("the firmware does not fit the target: " + "; ".join(over) + ". Try a shift "
                          "or binary model (weights a fraction of float32's), a smaller input (a "
                          "smaller arena), or a smaller stack_bytes in the target's [c] table")


def parse_macros(model_h: str) -> dict[str, int]:
    """The numeric ``#define EDGERT_* <int>`` lines of model.h (a u/U/l/L suffix or parentheses allowed)."""
    found = re.findall(r"^[ \t]*#[ \t]*define[ \t]+(EDGERT_\w+)[ \t]+\(?[ \t]*(\d+)[uUlL]*[ \t]*\)?",
                       model_h, flags=re.MULTILINE)
    macros = {name: int(value) for name, value in found}
    missing = [m for m in ("EDGERT_INPUT_SIZE", "EDGERT_OUTPUT_SIZE", "EDGERT_ARENA_BYTES")
               if m not in macros]
    if missing:
        raise EdgertError(f"model.h does not define {', '.join(missing)} as integers; the C backend's "
                          "contract (edgert/compilers/backends/c/__init__.py) lists the macros it needs")
    return macros


def section_sizes(size_output: str) -> dict[str, int]:
    """Sizes of the allocated sections in ``size -A`` output (debug and note sections left out)."""
    sizes = {}
    for line in size_output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            name = parts[0]
            if name in FLASH_SECTIONS or name in RAM_SECTIONS or int(parts[2]) != 0:
                sizes[name] = int(parts[1])
    return sizes


def _read_c_table(c: dict) -> tuple[str, list[str], int]:
    compiler = c.get("compiler", "arm-none-eabi-gcc")
    cflags = c.get("cflags")
    if not isinstance(cflags, list) or not all(isinstance(f, str) for f in cflags):
        raise TargetError(f"the target's [c] table needs cflags, a list of strings (got {cflags!r}), "
                          'e.g. ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]')
    stack = c.get("stack_bytes", DEFAULT_STACK_BYTES)
    if not isinstance(stack, int) or stack < 512 or stack % 8:
        raise TargetError(f"[c] stack_bytes={stack!r}: give a multiple of 8, at least 512 "
                          f"(default {DEFAULT_STACK_BYTES})")
    return compiler, cflags, stack


def _find_tools(compiler: str) -> str:
    """The path of the binutils `size` beside ``compiler``; an EdgertError naming the fix if absent."""
    if shutil.which(compiler) is None:
        raise EdgertError(f"{compiler} is not on PATH: building Cortex-M firmware needs the Arm "
                          f"bare-metal toolchain; {SETUP}")
    size_tool = compiler[:-3] + "size" if compiler.endswith("gcc") else "arm-none-eabi-size"
    if shutil.which(size_tool) is None:
        raise EdgertError(f"{size_tool} is not on PATH (binutils-arm-none-eabi); {SETUP}")
    return size_tool


def _relative(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] == "board":
        raise EdgertError(f"build_firmware: source path {rel!r} must be relative, inside the build "
                          "folder and not under board/ (the board files are edgert's own)")
    return path


def _run(cmd: list[str], what: str) -> str:
    """Run a tool; its stdout, or an EdgertError with the tool's own message."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        hint = ""
        if "nano.specs" in message or re.search(r"(stdint|math|string)\.h: No such file", message):
            hint = f"\n(newlib looks missing: libnewlib-arm-none-eabi; {SETUP})"
        raise EdgertError(f"{what}:\n{message[-6000:]}{hint}")
    return proc.stdout
