"""The daemon as a real process: socket, pty and folder sources; bad input; SIGKILL, SIGTERM; checkpoints."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from edgert.daemon import Daemon, Log
from edgert.link import Link, LinkError, RemoteError, T, encode_frame, encode_payload, open_client
from edgert.link.framing import MAX_FRAME
from edgert.link.ports import PipePort
from edgert.ops.reference import run_graph_ref
from edgert.runtime.checkpoint import checkpoint_files, read_checkpoint
from tests.link import edgert_main  # noqa: F401  (registers running_sum in this process too)
from tests.link.conftest import free_port_url, tiny_graph


def _x(rng, n=1):
    return rng.standard_normal((n, 1, 4, 4)).astype(np.float32)


def _ref(x):
    return run_graph_ref(tiny_graph(), {"x": x})[0]


def _connect(url: str) -> Link:
    return Link(open_client(url, timeout=0.05))


def _reply_to_next_frame(link: Link, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = link.poll()
        if ev is not None:
            return ev
    raise AssertionError("no reply")


def test_socket_bad_input_gets_errors_and_the_next_frame_is_served(tiny_artifact, tmp_path, procs):
    d = procs("daemon", tiny_artifact, "--source", "socket://127.0.0.1:0", "--adapt", "running_sum",
              "--state-dir", tmp_path / "state")
    link = _connect(free_port_url(d))
    rng = np.random.default_rng(0)

    def served():
        x = _x(rng, 2)
        r = link.request(T.INFER, arrays=[x])
        np.testing.assert_allclose(r.arrays[0], _ref(x), rtol=1e-5, atol=1e-5)
        assert r.meta["latency_ms"] > 0

    served()
    assert link.request(T.PING).type == T.PONG
    link.port.write(b"\x01\x02garbage\xffno delimiter yet")  # line noise, ended by the next frame's 0x00
    link.send(T.PING, 900)
    ev = _reply_to_next_frame(link)
    assert ev.type == T.ERROR and ev.meta["kind"] == "FrameError" and "corrupt" in ev.meta["message"]
    assert _reply_to_next_frame(link).rid == 900
    served()
    big = encode_frame(T.INFER, 901, encode_payload({}, [np.zeros(MAX_FRAME // 4 + 10, np.float32)]))
    link.port.write(big)
    ev = _reply_to_next_frame(link)
    assert ev.type == T.ERROR and "exceeds the maximum" in ev.meta["message"]
    served()
    nan = _x(rng)
    nan[0, 0, 1, 2] = np.nan
    bad = {"shape": np.zeros((1, 1, 5, 4), np.float32), "dtype": _x(rng).astype(np.float64), "nan": nan,
           "int": np.ones((1, 1, 4, 4), np.int32)}
    for what, x in bad.items():
        with pytest.raises(RemoteError) as e:
            link.request(T.INFER, arrays=[x])
        assert e.value.kind == "InputError", what
        served()
    with pytest.raises(RemoteError, match="agent"):
        link.request(T.DEPLOY_BEGIN, {"name": "x", "size": 1, "sha256": "0"})
    stats = link.request(T.STATS).meta
    assert stats["samples"] == 14 and stats["policy"]["count"] == 14 and stats["errors"] == 5
    assert link.request(T.LABEL, {"for": 1, "label": 3}).meta == {"used": False}
    snap = link.request(T.SNAPSHOT).meta
    state, meta = read_checkpoint(tmp_path / "state" / snap["checkpoint"])
    assert int(state["count"]) == 14 and meta["samples"] == 14
    link.request(T.RESET)
    assert link.request(T.STATS).meta["policy"]["count"] == 0
    served()
    link.close()
    assert d.signal(signal.SIGTERM) == 0
    d.wait_for("stop")
    state, meta = read_checkpoint(checkpoint_files(tmp_path / "state")[0])
    assert int(state["count"]) == 2  # the reset was checkpointed, then two more samples, saved on SIGTERM


@pytest.mark.slow
def test_sigkill_mid_stream_loses_at_most_one_interval_and_never_corrupts(tiny_artifact, tmp_path, procs):
    every = 4
    args = ("daemon", tiny_artifact, "--source", "socket://127.0.0.1:0", "--adapt", "running_sum",
            "--state-dir", tmp_path / "state", "--checkpoint-every", every, "--checkpoint-seconds", 1000)
    rng = np.random.default_rng(1)
    xs = list(_x(rng, 20000)[:, None])
    acked = 0
    for attempt in range(2):
        d = procs(*args)
        link = _connect(free_port_url(d))
        start = link.request(T.STATS).meta
        count = start["policy"]["count"]
        if attempt:  # resumed: a valid state from a checkpoint at most one interval behind what was acked
            assert acked - every <= count <= acked + 1 and start["resumed_from"].startswith("ckpt-")
            ref = np.zeros(16)
            for x in xs[:count]:
                ref += x.reshape(-1).astype(np.float64)
            np.testing.assert_array_equal(start["policy"]["sum"], ref)
            break
        threading.Timer(random.Random(2).uniform(0.3, 0.6), lambda: d.p.send_signal(signal.SIGKILL)).start()
        try:
            for x in xs:  # stream as fast as replies come until the daemon dies under us
                link.request(T.INFER, arrays=[x], timeout=3)
                acked += 1
        except LinkError:
            pass
        link.close()
        d.p.wait(timeout=10)
        assert 10 < acked < len(xs), acked
        assert d.p.returncode == -signal.SIGKILL
        for f in checkpoint_files(tmp_path / "state"):
            read_checkpoint(f)  # every file left behind is whole


def _daemon_with(tiny_artifact, state_dir, counts):
    """Checkpoints after each count in ``counts`` (in-process); returns the files, oldest first."""
    d = Daemon(tiny_artifact, "running_sum", state_dir, keep=5, log=Log(io.StringIO()))
    rng = np.random.default_rng(3)
    for c in counts:
        while d.samples < c:
            d.infer(_x(rng))
        d.checkpoint("test")
    return checkpoint_files(state_dir)[::-1]


def _resume(tiny_artifact, state_dir):
    out = io.StringIO()
    d = Daemon(tiny_artifact, "running_sum", state_dir, log=Log(out))
    return d, [json.loads(line) for line in out.getvalue().splitlines()]


def test_truncated_and_corrupted_checkpoints_fall_back(tiny_artifact, tmp_path):
    files = _daemon_with(tiny_artifact, tmp_path, [3, 5, 8])
    d, log = _resume(tiny_artifact, tmp_path)
    assert d.policy.count == 8 and log[-1]["file"] == files[2].name and not log[-1]["fallback"]

    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])  # truncated: power failed mid-write (without our rename)
    raw = bytearray(files[1].read_bytes())
    i = raw.find(b"count.npy") + 200
    raw[i] ^= 0xFF  # a flipped byte inside the data
    files[1].write_bytes(bytes(raw))
    stale = tmp_path / ".ckpt-000000000009.npz.abc.tmp"  # killed during a write, before the rename
    stale.write_bytes(b"PK\x03\x04 half a zip")
    d, log = _resume(tiny_artifact, tmp_path)
    assert not stale.exists()
    assert d.policy.count == 3 and d.samples == 3
    skipped = [e for e in log if e["event"] == "checkpoint_skipped"]
    assert [e["file"] for e in skipped] == [files[2].name, files[1].name]
    assert log[-1] == {**log[-1], "event": "resume", "source": "checkpoint", "file": files[0].name, "fallback": True}

    files[0].write_bytes(b"")
    d, log = _resume(tiny_artifact, tmp_path)
    assert d.policy.count == 0 and log[-1]["source"] == "source parameters"
    assert log[-1]["reason"] == "no valid checkpoint"


def test_checkpoint_of_another_policy_or_shape_is_not_loaded(tiny_artifact, tmp_path):
    _daemon_with(tiny_artifact, tmp_path, [2])
    out = io.StringIO()
    d = Daemon(tiny_artifact, "none", tmp_path, log=Log(out))
    assert d.resumed_from == "source" and "written by policy 'running_sum'" in out.getvalue()


def test_dir_source_processes_each_file_once(tiny_artifact, tmp_path, procs):
    rng = np.random.default_rng(4)
    x = _x(rng, 3)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x.astype(np.float64))
    d = procs("daemon", tiny_artifact, "--source", f"dir://{tmp_path}", "--adapt", "running_sum",
              "--state-dir", tmp_path / "state", "--verbose")
    d.wait_for("processed", file="a.npy")
    d.wait_for("input_error", file="b.npy")
    np.testing.assert_allclose(np.load(tmp_path / "a.out.npy"), _ref(x), rtol=1e-5, atol=1e-5)
    assert "InputError" in (tmp_path / "b.err.txt").read_text()
    np.save(tmp_path / "c.npy", x[:1])
    d.wait_for("processed", file="c.npy")
    assert d.signal(signal.SIGTERM) == 0
    d2 = procs("daemon", tiny_artifact, "--source", f"dir://{tmp_path}", "--adapt", "running_sum",
               "--state-dir", tmp_path / "state", "--verbose")
    assert d2.wait_for("resume")["samples"] == 4
    time.sleep(0.5)
    assert d2.signal(signal.SIGTERM) == 0
    assert not any(e for e in d2.log if '"processed"' in e)  # nothing processed twice


def _pty(link_path):
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    tmp = link_path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.ttyname(slave))
    os.replace(tmp, link_path)  # like udev's stable /dev/serial/by-id name for a re-plugged adapter
    return master, slave


def test_serial_pty_survives_a_cable_drop(tiny_artifact, tmp_path, procs):
    dev = tmp_path / "ttyEDGE"
    master, slave = _pty(dev)
    d = procs("daemon", tiny_artifact, "--source", f"serial://{dev}?baud=115200", "--adapt", "running_sum",
              "--state-dir", tmp_path / "state")
    d.wait_for("port_open")
    os.close(slave)
    link = Link(PipePort(master))
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = _x(rng)
        np.testing.assert_allclose(link.request(T.INFER, arrays=[x]).arrays[0], _ref(x), rtol=1e-5, atol=1e-5)
    link.close()  # the cable is pulled
    d.wait_for("port_closed")
    time.sleep(0.3)
    master, slave = _pty(dev)  # plugged back in
    d.wait_for("port_open")
    os.close(slave)
    link = Link(PipePort(master))
    x = _x(rng)
    np.testing.assert_allclose(link.request(T.INFER, arrays=[x]).arrays[0], _ref(x), rtol=1e-5, atol=1e-5)
    assert link.request(T.STATS).meta["policy"]["count"] == 4  # adaptation carried across the drop
    link.close()
    assert d.signal(signal.SIGTERM) == 0


def test_stdin_source_serves_frames_until_eof(tiny_artifact, tmp_path):
    import subprocess
    import sys

    from edgert.link import FrameReader
    from edgert.link.link import to_message
    from tests.link.conftest import ROOT

    rng = np.random.default_rng(6)
    xs = [_x(rng) for _ in range(3)]
    wire = b"".join(encode_frame(T.INFER, i + 1, encode_payload({}, [x])) for i, x in enumerate(xs))
    wire += b"\x07garbage" + encode_frame(T.STATS, 9, encode_payload({}, []))
    p = subprocess.run([sys.executable, "-m", "tests.link.edgert_main", "daemon", str(tiny_artifact), "--source",
                        "stdin", "--adapt", "running_sum", "--state-dir", str(tmp_path)], cwd=ROOT, input=wire,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    replies = [to_message(f) for f in FrameReader().feed(p.stdout)]
    assert [(r.type, r.rid) for r in replies] == [(T.RESULT, 1), (T.RESULT, 2), (T.RESULT, 3), (T.ERROR, 0),
                                                 (T.STATS_REPLY, 9)]
    for r, x in zip(replies, xs):
        np.testing.assert_allclose(r.arrays[0], _ref(x), rtol=1e-5, atol=1e-5)
    assert replies[-1].meta["policy"]["count"] == 3
    assert int(read_checkpoint(checkpoint_files(tmp_path)[0])[0]["count"]) == 3  # saved at end of input


def test_checkpoints_every_n_samples_or_t_seconds(tiny_artifact, tmp_path):
    out = io.StringIO()
    d = Daemon(tiny_artifact, "running_sum", tmp_path, checkpoint_every=3, checkpoint_seconds=0.2, keep=2,
               log=Log(out, verbose=True))
    rng = np.random.default_rng(7)
    for _ in range(7):
        d.infer(_x(rng))
        d.maybe_checkpoint()
    d.maybe_checkpoint()
    assert [json.loads(line)["why"] for line in out.getvalue().splitlines() if '"checkpoint"' in line] == \
        ["samples", "samples"]
    time.sleep(0.25)
    d.maybe_checkpoint()  # one sample since the last checkpoint and T seconds passed
    d.maybe_checkpoint()  # nothing new: no checkpoint
    files = checkpoint_files(tmp_path)
    assert len(files) == 2 and int(read_checkpoint(files[0])[0]["count"]) == 7  # only the newest `keep`
    assert json.loads(out.getvalue().splitlines()[-1])["why"] == "time"


def test_norm_policy_resumes_to_the_same_outputs(tmp_path):
    """With the real `norm` policy: a daemon restarted from a checkpoint answers like one never stopped."""
    import torch
    from torch import nn

    from edgert.compilers.compile import compile_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    art = compile_model(model, torch.zeros(1, 1, 4, 4)).save(tmp_path / "bn.edgert")
    rng = np.random.default_rng(8)
    xs = [(_x(rng) * 2 + 1).astype(np.float32) for _ in range(21)]  # shifted input: norm has work to do
    a = Daemon(art, "norm", tmp_path / "a", log=Log(io.StringIO()))
    for x in xs[:16]:
        a.infer(x)
    a.checkpoint("test")
    b = Daemon(art, "norm", tmp_path / "a", log=Log(io.StringIO()))
    assert b.resumed_from.startswith("ckpt-") and b.samples == 16
    for k, v in a.policy.state_dict().items():
        np.testing.assert_array_equal(b.policy.state_dict()[k], v, err_msg=k)
    for x in xs[16:]:
        np.testing.assert_array_equal(a.infer(x)[0][0], b.infer(x)[0][0])
    fresh = Daemon(art, "norm", tmp_path / "fresh", log=Log(io.StringIO()))
    assert not np.array_equal(fresh.infer(xs[20])[0][0], b.infer(xs[20])[0][0])  # adaptation did something
