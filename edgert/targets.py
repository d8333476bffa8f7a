"""Target boards: load and validate the TOML files in targets/ (and a user's own folders)."""

from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgert.errors import TargetError

# Shipped in the wheel as edgert/_targets; in a source checkout they sit at the repository root.
_BUILTIN = [Path(__file__).parent / "_targets", Path(__file__).parent.parent / "targets"]
ENV_VAR = "EDGERT_TARGETS"  # extra folders of board files, separated by os.pathsep


@dataclass(frozen=True)
class Target:
    """One board: how to generate code for it and what its hardware can do."""

    name: str
    description: str
    arch: str  # platform.machine() of a device that can load this target's libraries
    tvm: dict[str, Any]  # TVM target dict; empty when there is no code generation for the board
    cross_compiler: str | None = None  # linker for the shared library; None links with the host's
    weights_in_flash: bool = False  # a microcontroller reads weights in place from flash, not from RAM
    cpu: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    energy: dict[str, Any] = field(default_factory=dict)
    # how edgert's own kernels fare against the plain roofline (optional; see KERNEL_TABLES)
    op_overhead_cycles: dict[str, float] = field(default_factory=dict)
    op_efficiency: dict[str, float] = field(default_factory=dict)
    size_efficiency: dict[str, dict[int, float]] = field(default_factory=dict)
    c: dict[str, Any] = field(default_factory=dict)  # the C backend's [c] table (microcontrollers)
    path: str = ""

    @property
    def has_codegen(self) -> bool:
        """True when edgert generates code for the board: TVM libraries or C firmware."""
        return bool(self.tvm) or bool(self.c)

    @property
    def codegen(self) -> str:
        """"tvm", "C firmware" (a microcontroller) or "estimate only"."""
        return "tvm" if self.tvm else "C firmware" if self.c else "estimate only"

    def runs_here(self) -> bool:
        """True when this machine can load a library compiled for the target."""
        return platform.machine() == self.arch


# Op kinds priced by [throughput] (ops per cycle per core) and [energy] (<kind>_pj); the same
# vocabulary as edgert.runtime.profile.OP_KINDS (a test keeps the two equal).
OP_KINDS = ("fp32_mac", "int8_mac", "binary_mac", "shift_add", "accumulate", "elementwise")
_FIELDS: dict[str, tuple[str, ...] | None] = {
    "cpu": ("cores", "clock_hz", "simd_bits", "kernel_overhead_cycles"),
    "memory": ("ram_bytes", "flash_bytes", "sram_bytes", "bandwidth_bytes_per_s", "cache_bytes",
               "cache_bandwidth_bytes_per_s", "sram_bandwidth_bytes_per_s", "l1_bytes", "l1_bandwidth_bytes_per_s"),
    "throughput": OP_KINDS,
    # per op (pJ), per byte from on-chip SRAM and from DRAM (flash on a microcontroller), and the
    # neuromorphic per-neuron-update figure
    "energy": tuple(f"{k}_pj" for k in OP_KINDS) + ("sram_byte_pj", "dram_byte_pj", "neuron_update_pj"),
}
# Required when the table is present (a board file may leave out [throughput] and [energy]: the
# profiler then gives no estimates for it, and says so).
_REQUIRED = {"cpu": ("cores", "clock_hz"), "memory": ("ram_bytes", "flash_bytes"),
             "energy": ("sram_byte_pj", "dram_byte_pj")}


# The [c] table of a microcontroller (the C backend, compilers/backends/c): key -> type.
C_FIELDS = {"compiler": str, "cflags": list, "emulator": str, "machine": str, "stack_bytes": int}


def _c_table(data: dict, problems: list[str]) -> dict[str, Any]:
    c = data.get("c", {})
    if not isinstance(c, dict):
        problems.append("[c] must be a table")
        return {}
    for k, v in c.items():
        if k not in C_FIELDS:
            problems.append(f"unknown field c.{k}; valid fields: {', '.join(C_FIELDS)}")
        elif not isinstance(v, C_FIELDS[k]) or isinstance(v, bool):
            problems.append(f"field c.{k} = {v!r} should be {C_FIELDS[k].__name__}")
    if c:
        for k in ("compiler", "cflags", "machine"):
            if k not in c:
                problems.append(f"missing field c.{k}")
        if not all(isinstance(f, str) for f in c.get("cflags", [])):
            problems.append(f"field c.cflags = {c['cflags']!r} should be a list of strings like [\"-mcpu=cortex-m7\"]")
    return dict(c)


# Optional tables on edgert's own kernels for the float ops, for boards where they were measured:
# - op_overhead_cycles: <op> = fixed cost in cycles of one kernel call whose main op is <op>
#   (replaces cpu.kernel_overhead_cycles for it);
# - op_efficiency: <op> = the fraction of its op kind's [throughput] that <op>'s kernel reaches
#   (say a max pool reading with a stride: below the elementwise rate);
# - size_efficiency.<op>: "<size>" = that fraction as a curve over the size that decides how the
#   op's kernel vectorizes (SIZES); the estimator interpolates between the listed sizes.
KERNEL_TABLES = ("op_overhead_cycles", "op_efficiency", "size_efficiency")
SIZES = {
    # a convolution vectorized over output channels (cpu_tiles.packs_weight): its register tile
    "conv2d": "register tile width in output columns (compilers/backends/cpu_tiles.py)",
    # LLVM unrolls and vectorizes a short window whole, a long one not
    "adaptive_avg_pool2d": "window elements per output",
    # the elementwise schedule vectorizes the innermost loop whole (up to 8 vectors): a short one
    # leaves lanes idle
    "relu": "innermost dimension in elements",
}
MAX_EFFICIENCY = 2.0  # a kernel may beat the reference kernel its op kind's rate was measured on, not by 2x


def _kernel_ops() -> tuple[str, ...]:
    from edgert import ir

    return tuple(op for op, cls in ir.OPS.items() if cls.family == "float")


def _fractions(table: dict, where: str, problems: list[str], key_ok, key_hint: str) -> dict:
    """A table of efficiencies (0 < v <= MAX_EFFICIENCY) whose keys pass ``key_ok``."""
    out = {}
    for k, v in table.items():
        if not key_ok(k):
            problems.append(f"unknown field {where}.{k}; {key_hint}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool):
            problems.append(f"field {where}.{k} = {v!r} should be a number")
        elif not 0 < v <= MAX_EFFICIENCY:
            problems.append(f"field {where}.{k} = {v!r} must be a fraction of the op kind's throughput, "
                            f"above 0 and at most {MAX_EFFICIENCY:g}")
        else:
            out[k] = float(v)
    return out


def _kernel_tables(data: dict, problems: list[str]) -> dict[str, dict]:
    """The optional kernel tables, checked; size_efficiency keys become ints."""
    ops = _kernel_ops()
    op_hint = f"valid ops (edgert's float kernels): {', '.join(ops)}"
    tables = {}
    for t in KERNEL_TABLES:
        tables[t] = data.get(t, {})
        if not isinstance(tables[t], dict):
            problems.append(f"[{t}] must be a table")
            tables[t] = {}
    overhead = {}
    for k, v in tables["op_overhead_cycles"].items():
        if k not in ops:
            problems.append(f"unknown field op_overhead_cycles.{k}; {op_hint}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            problems.append(f"field op_overhead_cycles.{k} = {v!r} should be a number of cycles >= 0")
        else:
            overhead[k] = float(v)
    sizes = {}
    for op, curve in tables["size_efficiency"].items():
        if op not in SIZES:
            problems.append(f"unknown table [size_efficiency.{op}]; curves exist for: "
                            + "; ".join(f"{o} (by {what})" for o, what in SIZES.items()))
        elif not isinstance(curve, dict):
            problems.append(f"[size_efficiency.{op}] must be a table like \"8\" = 1.0 (by {SIZES[op]})")
        else:
            fractions = _fractions(curve, f"size_efficiency.{op}", problems, lambda k: k.isdigit() and int(k) >= 1,
                                   f'name each entry by a {SIZES[op]}, like "8" = 1.0')
            sizes[op] = {int(k): v for k, v in sorted(fractions.items(), key=lambda kv: int(kv[0]))}
    return {"op_overhead_cycles": overhead, "size_efficiency": sizes,
            "op_efficiency": _fractions(tables["op_efficiency"], "op_efficiency", problems, lambda k: k in ops, op_hint)}


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return extra + [d for d in _BUILTIN if d.is_dir()]


def target_files() -> dict[str, Path]:
    """Known target names -> their files; a user's folders shadow the built-in ones."""
    found: dict[str, Path] = {}
    for d in reversed(_search_dirs()):
        for f in sorted(d.glob("*.toml")):
            found[f.stem] = f
    return dict(sorted(found.items()))


def _require(d: dict, key: str, kind: type | tuple, where: str, problems: list[str]) -> Any:
    if key not in d:
        problems.append(f"missing field {where}{key}")
        return None
    if not isinstance(d[key], kind) or isinstance(d[key], bool) and kind is not bool:
        problems.append(f"field {where}{key} = {d[key]!r} should be {getattr(kind, '__name__', kind)}")
        return None
    return d[key]


def parse_target(data: dict, path: str = "<memory>") -> Target:
    """Validate a target table; collects every problem and raises one TargetError."""
    problems: list[str] = []
    name = _require(data, "name", str, "", problems)
    desc = _require(data, "description", str, "", problems)
    arch = _require(data, "arch", str, "", problems)
    tvm = data.get("tvm", {})
    if not isinstance(tvm, dict):
        problems.append("[tvm] must be a table")
    elif tvm:
        _require(tvm, "kind", str, "tvm.", problems)
        _require(tvm, "mtriple", str, "tvm.", problems)
        mattr = tvm.get("mattr", [])
        if not isinstance(mattr, list) or not all(isinstance(a, str) for a in mattr):
            problems.append(f"field tvm.mattr = {mattr!r} should be a list of strings like [\"+neon\"]")
    tables = {}
    for t in ("cpu", "memory", "throughput", "energy"):
        tables[t] = data.get(t, {})
        if not isinstance(tables[t], dict):
            problems.append(f"[{t}] must be a table")
            tables[t] = {}
        for k, v in tables[t].items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                problems.append(f"field {t}.{k} = {v!r} should be a number")
            elif v < 0:
                problems.append(f"field {t}.{k} = {v!r} must be >= 0")
        valid = _FIELDS[t]
        if valid is not None:
            for k in tables[t]:
                if k not in valid:
                    problems.append(f"unknown field {t}.{k}; valid fields: {', '.join(valid)}")
        for k in _REQUIRED.get(t, ()) if tables[t] else ():
            if k not in tables[t]:
                problems.append(f"missing field {t}.{k}")
    if tables["throughput"] and not tables["energy"]:
        problems.append("[throughput] is given but [energy] is missing; the profiler needs both")
    cross = data.get("cross_compiler")
    if cross is not None and not isinstance(cross, str):
        problems.append(f"field cross_compiler = {cross!r} should be a string (e.g. aarch64-linux-gnu-g++)")
    in_flash = data.get("weights_in_flash", False)
    if not isinstance(in_flash, bool):
        problems.append(f"field weights_in_flash = {in_flash!r} should be true or false")
    kernels = _kernel_tables(data, problems)
    c = _c_table(data, problems)
    if c and tvm:
        problems.append("a target has either [tvm] (Linux boards) or [c] (microcontrollers), not both")
    if "conv2d" in kernels["size_efficiency"] and "simd_bits" not in tables["cpu"]:
        problems.append("[size_efficiency.conv2d] needs cpu.simd_bits (the vector width sets which "
                        "convolutions vectorize over output channels)")
    if problems:
        raise TargetError(f"target file {path} is malformed:\n  " + "\n  ".join(problems)
                          + "\nsee targets/x86-host.toml for a complete example")
    return Target(name=name, description=desc, arch=arch, tvm=dict(tvm), cross_compiler=cross,
                  weights_in_flash=in_flash, c=c, path=str(path), **tables, **kernels)


def load_target(name_or_path: str | Path) -> Target:
    """Load a target by name (``rpi4``) or by the path of a .toml file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        path = p
    else:
        files = target_files()
        if str(name_or_path) not in files:
            raise TargetError(f"unknown target {str(name_or_path)!r}; known targets: "
                              f"{', '.join(files) or 'none'}. To add a board, write <name>.toml "
                              f"(see targets/x86-host.toml) into a folder named by ${ENV_VAR}")
        path = files[str(name_or_path)]
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {e}") from None
    t = parse_target(data, str(path))
    if t.name != path.stem:
        raise TargetError(f"target file {path} declares name = {t.name!r}; it must match the file name "
                          f"{path.stem!r}")
    return t
