import pytest

from edgert.errors import TargetError
from edgert.targets import load_target, parse_target, target_files


def test_builtin_host_target_loads():
    t = load_target("x86-host")
    assert t.arch == "x86_64" and t.tvm["mtriple"] == "x86_64-linux-gnu" and t.has_codegen


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match="known targets: .*x86-host"):
        load_target("no-such-board")


def test_user_folder_adds_a_board(tmp_path, monkeypatch):
    (tmp_path / "myboard.toml").write_text(
        'name = "myboard"\ndescription = "d"\narch = "aarch64"\n'
        '[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n')
    monkeypatch.setenv("EDGERT_TARGETS", str(tmp_path))
    assert "myboard" in target_files()
    assert load_target("myboard").arch == "aarch64"


def test_malformed_target_reports_every_problem(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('name = "bad"\narch = 5\n[tvm]\nkind = "llvm"\n[cpu]\ncores = "two"\n')
    with pytest.raises(TargetError) as e:
        load_target(f)
    msg = str(e.value)
    for problem in ("missing field description", "arch = 5", "missing field tvm.mtriple", "cpu.cores"):
        assert problem in msg


def test_broken_toml_is_a_clear_error(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("name = \n")
    with pytest.raises(TargetError, match="cannot read target file"):
        load_target(f)


CATALOGUE = ("x86-host", "rpi4", "rpi5", "rpi-zero2w", "jetson-nano", "stm32h7", "nrf52840", "loihi")


@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue_board_loads_with_prices(name):
    t = load_target(name)
    assert t.cpu["cores"] >= 1 and t.cpu["clock_hz"] > 0
    assert t.memory["ram_bytes"] > 0 and t.memory["flash_bytes"] > 0
    assert t.throughput and {"sram_byte_pj", "dram_byte_pj"} <= set(t.energy)
    for kind in t.throughput:  # every kind a board can run has a price
        assert f"{kind}_pj" in t.energy


@pytest.mark.parametrize("name", CATALOGUE)
def test_every_number_in_a_board_file_cites_its_source(name):
    """A numeric field carries a comment on its line or at its table's header (on it or just above)."""
    header_comment, previous = False, ""
    for line in open(load_target(name).path).read().splitlines():
        code = line.split("#")[0].strip()
        if code.startswith("["):
            header_comment = "#" in line or previous.startswith("#")
        elif "=" in code and code.split("=", 1)[1].strip()[:1].isdigit():
            assert "#" in line or header_comment, f"{name}: no source for {code!r}"
        previous = line.strip()


def test_codegen_split_between_linux_boards_and_microcontrollers():
    for name in ("rpi4", "rpi5", "rpi-zero2w", "jetson-nano"):
        t = load_target(name)
        assert t.arch == "aarch64" and t.tvm["mtriple"] == "aarch64-linux-gnu"
        assert t.cross_compiler == "aarch64-linux-gnu-g++"
    for name, machine in (("stm32h7", "mps2-an500"), ("nrf52840", "mps2-an386")):
        t = load_target(name)
        assert t.codegen == "C firmware" and not t.tvm and t.c["machine"] == machine
        assert t.c["compiler"] == "arm-none-eabi-gcc"
    assert load_target("loihi").codegen == "estimate only" and not load_target("loihi").has_codegen


def test_c_table_is_checked():
    base = {"name": "m", "description": "d", "arch": "armv7e-m"}
    with pytest.raises(TargetError) as e:
        parse_target(dict(base, c={"compiler": "arm-none-eabi-gcc", "cflags": "-O2", "speed": 1}))
    msg = str(e.value)
    assert "unknown field c.speed" in msg and "c.cflags" in msg and "missing field c.machine" in msg


def test_op_kinds_match_the_profiler():
    from edgert.runtime.profile import OP_KINDS
    from edgert.targets import OP_KINDS as TARGET_KINDS

    assert OP_KINDS == TARGET_KINDS


def test_bad_price_tables_are_named(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text('name = "b"\ndescription = "d"\narch = "x"\n[cpu]\ncores = 1\nclock_hz = 1e9\n'
                 '[memory]\nram_bytes = 1\n[throughput]\nfp32_macs = 2\nint8_mac = -1\n'
                 '[energy]\nfp32_mac_pj = "lots"\nsram_byte_pj = 1\ndram_byte_pj = 2\n')
    with pytest.raises(TargetError) as e:
        load_target(f)
    msg = str(e.value)
    for problem in ("unknown field throughput.fp32_macs; valid fields: fp32_mac", "int8_mac = -1 must be >= 0",
                    "energy.fp32_mac_pj = 'lots' should be a number", "missing field memory.flash_bytes"):
        assert problem in msg, msg


def test_cli_lists_one_line_per_board_and_names_a_malformed_file(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "broken-board.toml").write_text('name = "broken-board"\narch = "x"\n')
    env = dict(os.environ, EDGERT_TARGETS=str(tmp_path), COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "edgert.cli", "targets"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("│")]
    for name in CATALOGUE:
        assert sum(line.split("│")[1].strip() == name for line in rows) == 1, name
    assert len(rows) == len(CATALOGUE) + 1  # no row wraps onto a second line
    assert "malformed" in out.stdout
    assert "broken-board.toml is malformed" in out.stderr and "missing field description" in out.stderr


HEAD = 'name = "k"\ndescription = "d"\narch = "x"\n[cpu]\ncores = 1\nclock_hz = 1e9\nsimd_bits = 256\n'


def test_kernel_tables_are_read(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text(HEAD + '[op_overhead_cycles]\nconv2d = 300\n[op_efficiency]\nmax_pool2d = 0.25\n'
                 '[size_efficiency.conv2d]\n"8" = 1.0\n"4" = 0.5\n')
    t = load_target(f)
    assert t.op_overhead_cycles == {"conv2d": 300} and t.op_efficiency == {"max_pool2d": 0.25}
    assert t.size_efficiency == {"conv2d": {4: 0.5, 8: 1.0}}


def test_bad_kernel_tables_are_named(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text(HEAD.replace("simd_bits = 256\n", "") + '[op_overhead_cycles]\nconv3d = 1\nlinear = -5\n'
                 '[op_efficiency]\nmax_pool2d = 0\nrelu = 3.5\nadd = "fast"\n'
                 '[size_efficiency.conv2d]\nwide = 0.5\n"0" = 0.5\n"4" = 0.5\n[size_efficiency.max_pool2d]\n"1" = 1\n')
    with pytest.raises(TargetError) as e:
        load_target(f)
    msg = str(e.value)
    for problem in ("unknown field op_overhead_cycles.conv3d; valid ops (edgert's float kernels): conv2d",
                    "op_overhead_cycles.linear = -5 should be a number of cycles >= 0",
                    "op_efficiency.max_pool2d = 0 must be a fraction", "op_efficiency.relu = 3.5 must be a fraction",
                    "op_efficiency.add = 'fast' should be a number",
                    "unknown field size_efficiency.conv2d.wide; name each entry by a register tile width",
                    "unknown field size_efficiency.conv2d.0;",
                    "unknown table [size_efficiency.max_pool2d]; curves exist for: conv2d (by register tile width",
                    "[size_efficiency.conv2d] needs cpu.simd_bits"):
        assert problem in msg, msg


def test_only_the_host_carries_measured_kernel_tables():
    """A curve measured on x86 must not silently price an Arm board: the others have none."""
    host = load_target("x86-host")
    assert host.op_overhead_cycles and host.op_efficiency
    assert set(host.size_efficiency) == {"conv2d", "adaptive_avg_pool2d", "relu"}
    headers = {line.split("#")[0].strip(): line for line in open(host.path).read().splitlines() if line.startswith("[")}
    for table in ("[op_overhead_cycles]", "[op_efficiency]", "[size_efficiency.conv2d]"):
        assert "# measured by tools/calibrate on 20" in headers[table], table
    for name in CATALOGUE[1:]:
        t = load_target(name)
        assert not (t.op_overhead_cycles or t.op_efficiency or t.size_efficiency), name
