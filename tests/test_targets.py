import pytest

from edgert.errors import TargetError
from edgert.targets import load_target, target_files


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
