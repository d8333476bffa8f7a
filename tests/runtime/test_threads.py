"""Engine threads: the number of TVM threads reaches TVM's thread pool; bad settings fail clearly."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from edgert import ir
from edgert.cli import app
from edgert.compilers.compile import build_artifact
from edgert.errors import EdgertError
from edgert.runtime import engine as engine_mod
from edgert.runtime.engine import load
from edgert.runtime.tvm_runner import cpu_cores


def _graph() -> ir.Graph:
    rng = np.random.default_rng(0)
    p = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 2, 6, 6))),),
        nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1),
               ir.Relu(name="r", inputs=("y",), output="z"),
               ir.Flatten(name="f", inputs=("z",), output="f"),
               ir.Linear(name="l", inputs=("f", "lw", "lb"), output="out")),
        outputs=("out",), params={"w": p(4, 2, 3, 3), "b": p(4), "lw": p(3, 144), "lb": p(3)})


MACS = 4 * 36 * 2 * 9 + 3 * 144  # conv + linear, per sample


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory):
    return build_artifact(_graph(), "x86-host").save(tmp_path_factory.mktemp("art") / "m.edgert")


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("EDGERT_THREADS", raising=False)
    monkeypatch.setattr("edgert.runtime.tvm_runner.tvm_num_threads_setting", lambda: None)
    return monkeypatch


def _in_fresh_process(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a new interpreter (TVM's pool starts there: its size is per process and thread);
    it prints one JSON line."""
    base = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "EDGERT_THREADS")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**base, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


POOL = """
    import json, os
    import numpy as np
    from edgert._tvm import import_tvm
    from edgert.runtime.engine import load
    tvm = import_tvm()
    pool = tvm.get_global_func("runtime.NumThreads")  # the threads TVM's pool of this thread runs tasks on
    x = np.zeros((1, 2, 6, 6), np.float32)
    path = {path!r}
"""


def test_threads_reach_tvm_pool(artifact_path):
    got = _in_fresh_process(POOL.format(path=str(artifact_path)) + """
    two = load(path, threads=2)
    two.run(x)
    after_two = pool()
    one = load(path, threads=1)
    one.run(x)
    env_one = os.environ["TVM_NUM_THREADS"]  # TVM reads it at every parallel call: 1 runs kernels inline
    two.run(x)
    print(json.dumps({"after_two": after_two, "env_one": env_one, "again": pool(),
                      "env_two": os.environ["TVM_NUM_THREADS"]}))
    """, {})
    assert got == {"after_two": 2, "env_one": "1", "again": 2, "env_two": "2"}


def test_one_thread_overrides_tvm_default(artifact_path):
    # TVM_NUM_THREADS=3 set outside edgert would size the pool at 3; threads=1 keeps the pool at 1
    got = _in_fresh_process(POOL.format(path=str(artifact_path)) + """
    load(path, threads=1).run(x)
    print(json.dumps({"pool": pool()}))
    """, {"TVM_NUM_THREADS": "3"})
    assert got == {"pool": 1}


def test_edgert_threads_env_reaches_tvm_pool(artifact_path):
    got = _in_fresh_process(POOL.format(path=str(artifact_path)) + """
    e = load(path)
    e.run(x)
    print(json.dumps({"threads": e.threads, "pool": pool()}))
    """, {"EDGERT_THREADS": "2"})
    assert got == {"threads": 2, "pool": 2}


def test_default_is_one_thread_for_a_small_model(artifact_path, clean_env):
    e = load(artifact_path)
    assert e.threads is None  # edgert's choice, per run
    assert e.threads_for(1) == 1
    assert e.threads_for(engine_mod.MACS_PER_THREAD // MACS) == 1
    assert e.threads_for(10 * engine_mod.MACS_PER_THREAD // MACS + 1) == min(cpu_cores(), 11)
    assert e.threads_for(10 ** 9) == cpu_cores()


def test_settings_in_order(artifact_path, clean_env):
    assert load(artifact_path, threads=3).threads == 3
    clean_env.setenv("EDGERT_THREADS", " 2 ")
    assert load(artifact_path).threads == 2
    assert load(artifact_path, threads=1).threads == 1  # the argument wins over the environment
    clean_env.delenv("EDGERT_THREADS")
    clean_env.setattr("edgert.runtime.tvm_runner.tvm_num_threads_setting", lambda: "4")
    assert load(artifact_path).threads == 4  # TVM_NUM_THREADS set outside edgert is honoured


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_threads_argument(artifact_path, clean_env, bad):
    with pytest.raises(EdgertError, match=r"threads=.* is not a number of threads: pass threads=N with N >= 1"):
        load(artifact_path, threads=bad)


@pytest.mark.parametrize("bad", ["0", "-2", "two", "", "1.5"])
def test_bad_edgert_threads_env(artifact_path, clean_env, bad):
    clean_env.setenv("EDGERT_THREADS", bad)
    with pytest.raises(EdgertError, match=r"EDGERT_THREADS=.* is not a number of threads: set EDGERT_THREADS "
                                          r"to a whole number >= 1 \(e.g. EDGERT_THREADS=1\), or unset it"):
        load(artifact_path)


def test_bad_tvm_num_threads_env(artifact_path, clean_env):
    clean_env.setattr("edgert.runtime.tvm_runner.tvm_num_threads_setting", lambda: "many")
    with pytest.raises(EdgertError, match="TVM_NUM_THREADS='many' is not a number of threads: set TVM_NUM_THREADS"):
        load(artifact_path)


def test_cli_threads(artifact_path, clean_env, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 6, 6), np.float32))
    runner = CliRunner()
    for command in (["run", str(artifact_path), "-i", str(tmp_path / "x.npy")],
                    ["profile", str(artifact_path), "--repeat", "1"]):
        bad = runner.invoke(app, [*command, "--threads", "0"])
        assert bad.exit_code == 2 and "--threads" in bad.output, bad.output
        ok = runner.invoke(app, [*command, "--threads", "1"])
        assert ok.exit_code == 0, ok.output
        assert os.environ["EDGERT_THREADS"] == "1"
        clean_env.delenv("EDGERT_THREADS")
    bad = runner.invoke(app, ["daemon", str(artifact_path), "--source", "stdin", "--state-dir",
                              str(tmp_path / "s"), "--threads", "-1"])
    assert bad.exit_code == 2 and "--threads" in bad.output, bad.output
