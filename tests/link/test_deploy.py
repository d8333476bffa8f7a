"""Deploy and remote run against `edgert agent` in its own process: drops resume, partial uploads never run."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from edgert.link import Link, LinkError, PortClosed, RemoteError, T, open_client
from edgert.link.deploy import deploy, file_sha256
from edgert.ops.reference import run_graph_ref
from tests.link.conftest import ROOT, free_port_url, tiny_graph


class _DroppingPort:
    """A client port whose cable is pulled after ``limit`` bytes, in the middle of a frame."""

    def __init__(self, url, limit):
        self.inner, self.left = open_client(url), limit

    def read(self, n):
        return self.inner.read(n)

    def write(self, data):
        if len(data) > self.left:
            self.inner.write(data[: self.left])
            self.inner.close()
            raise PortClosed("cable pulled")
        self.left -= len(data)
        self.inner.write(data)

    def close(self):
        pass


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tests.link.edgert_main", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _infer(url, x):
    link = Link(open_client(url))
    try:
        return link.request(T.INFER, arrays=[x])
    finally:
        link.close()


def test_interrupted_deploy_resumes_and_the_agent_never_runs_a_partial_artifact(
        tiny_artifact, tiny_artifact_b, tmp_path, procs):
    store = tmp_path / "store"
    agent = procs("agent", "--port", "socket://127.0.0.1:0", "--store", store)
    url = free_port_url(agent)
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    ref_a, ref_b = (run_graph_ref(tiny_graph(s), {"x": x})[0] for s in (0, 1))

    with pytest.raises(RemoteError, match="no artifact deployed"):
        _infer(url, x)
    r = deploy(url, tiny_artifact, chunk=4096)
    assert r["resumed_at"] == 0 and r["sent"] == tiny_artifact.stat().st_size
    np.testing.assert_allclose(_infer(url, x).arrays[0], ref_a, rtol=1e-5, atol=1e-5)

    size_b = tiny_artifact_b.stat().st_size
    with pytest.raises(LinkError, match="dropped"):
        deploy(Link(_DroppingPort(url, size_b // 2)), tiny_artifact_b, chunk=4096)
    reply = _infer(url, x)  # still the old model: the half-sent one is never run
    np.testing.assert_allclose(reply.arrays[0], ref_a, rtol=1e-5, atol=1e-5)
    assert reply.meta["artifact"] == file_sha256(tiny_artifact)
    bad = _cli("run", tiny_artifact_b, "--remote", url, "--input", _save(tmp_path, x))
    assert bad.returncode == 2 and "deploy it first" in bad.stderr

    out = _cli("deploy", tiny_artifact_b, "--port", url, "--chunk", 4096)
    assert out.returncode == 0, out.stderr
    resumed = int(out.stdout.split("resumed at ")[1].split(" B")[0].replace(",", ""))
    assert size_b // 2 - 4096 * 2 <= resumed < size_b
    out = _cli("run", tiny_artifact_b, "--remote", url, "--input", _save(tmp_path, x), "--output", tmp_path / "y.npy")
    assert out.returncode == 0, out.stderr
    assert "measured on board" in out.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref_b, rtol=1e-5, atol=1e-5)

    # uploads that must be refused, leaving the current artifact in place
    link = Link(open_client(url))
    junk = b"not an artifact" * 100
    sha = hashlib.sha256(junk).hexdigest()
    link.request(T.DEPLOY_BEGIN, {"name": "junk", "size": len(junk), "sha256": sha})
    import zlib
    link.request(T.DEPLOY_CHUNK, {"sha256": sha, "offset": 0, "crc32": zlib.crc32(junk)},
                 [np.frombuffer(junk, np.uint8)])
    with pytest.raises(RemoteError, match="not a usable artifact"):
        link.request(T.DEPLOY_COMMIT, {"sha256": sha})
    liar = hashlib.sha256(b"something else" * 100).hexdigest()
    link.request(T.DEPLOY_BEGIN, {"name": "liar", "size": len(junk), "sha256": liar})
    with pytest.raises(RemoteError, match="CRC32 mismatch"):
        link.request(T.DEPLOY_CHUNK, {"sha256": liar, "offset": 0, "crc32": 1}, [np.frombuffer(junk, np.uint8)])
    link.request(T.DEPLOY_CHUNK, {"sha256": liar, "offset": 0, "crc32": zlib.crc32(junk)},
                 [np.frombuffer(junk, np.uint8)])
    with pytest.raises(RemoteError, match="do not match their SHA-256"):
        link.request(T.DEPLOY_COMMIT, {"sha256": liar})
    assert link.request(T.PING).meta["artifact"] == file_sha256(tiny_artifact_b)
    link.close()

    assert agent.signal(signal.SIGTERM) == 0
    agent2 = procs("agent", "--port", "socket://127.0.0.1:0", "--store", store)
    agent2.wait_for("loaded")
    url = free_port_url(agent2)
    np.testing.assert_allclose(_infer(url, x).arrays[0], ref_b, rtol=1e-5, atol=1e-5)


def _save(tmp_path, x):
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"
