"""Deploy an artifact over the link, resumably, and run it remotely; the agent that receives it.

Host: ``deploy(url, artifact)`` sends DEPLOY_BEGIN (name, size, SHA-256); the agent answers how many
bytes it already holds for that SHA-256 (a dropped deploy resumes there); then DEPLOY_CHUNKs, each with
its offset and CRC32 on top of the frame's own CRC; then DEPLOY_COMMIT. The agent checks the whole
file's SHA-256, moves it into its store, verifies it as an artifact (``Artifact.read``) and loads it, and
only then switches ``current`` (a symlink replaced atomically) and its in-memory engine. A partial or
bad upload is never run: until a commit succeeds the agent keeps serving what it had.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert.artifact import Artifact
from edgert.errors import EdgertError
from edgert.link.link import Link
from edgert.link.messages import LinkError, Message, T
from edgert.link.ports import open_client
from edgert.link.server import Reply
from edgert.runtime.engine import Engine

CHUNK = 32 * 1024
MAX_ARTIFACT = 1 << 30


class DeployError(EdgertError):
    """An upload cannot be accepted: bad checksum, not an artifact, out of order."""


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Agent:
    """The board side: a store of verified artifacts, the current one loaded, uploads in progress."""

    def __init__(self, store: str | Path, log: Callable[..., None]):
        self.store, self.log = Path(store), log
        self.incoming, self.artifacts = self.store / "incoming", self.store / "artifacts"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.current = self.store / "current"
        self.engine: Engine | None = None
        self.sha: str | None = None
        self.uploads: dict[str, int] = {}  # sha256 -> announced size
        self.runs = 0
        if self.current.exists():
            try:
                self._load(self.current.resolve())
                self.log("loaded", artifact=self.current.resolve().name)
            except EdgertError as e:
                self.log("load_failed", artifact=str(self.current), reason=str(e))
        else:
            self.log("empty_store", store=str(self.store))

    def _load(self, path: Path) -> None:
        self.engine, self.sha = Engine(Artifact.read(path)), path.stem

    def _part(self, sha: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
            raise DeployError(f"sha256 {sha!r} is not 64 hex digits")
        return self.incoming / f"{sha}.part"

    def handle(self, msg: Message) -> Reply:
        m = msg.meta
        if msg.type == T.PING:
            return T.PONG, {"artifact": self.sha}, []
        if msg.type == T.STATS:
            return T.STATS_REPLY, {"artifact": self.sha, "runs": self.runs, "uploads": len(self.uploads)}, []
        if msg.type == T.INFER:
            if self.engine is None:
                raise DeployError("no artifact deployed on this board yet; run `edgert deploy ARTIFACT --port URL`")
            if len(msg.arrays) != 1:
                raise DeployError(f"INFER carries one input array, got {len(msg.arrays)}")
            t0 = time.perf_counter()
            y = self.engine.run(msg.arrays[0])
            ms = (time.perf_counter() - t0) * 1e3
            self.runs += 1
            return T.RESULT, {"latency_ms": ms, "artifact": self.sha}, (y if isinstance(y, list) else [y])
        if msg.type == T.DEPLOY_BEGIN:
            size, sha = int(m.get("size", -1)), m.get("sha256")
            part = self._part(sha)
            if not 0 < size <= MAX_ARTIFACT:
                raise DeployError(f"artifact size {size} is outside 1..{MAX_ARTIFACT} bytes")
            if (self.artifacts / f"{sha}.edgert").exists():
                have = size
            else:
                have = part.stat().st_size if part.exists() else 0
                if have > size:
                    part.unlink()
                    have = 0
            self.uploads[sha] = size
            self.log("deploy_begin", name=m.get("name"), sha256=sha[:12], size=size, have=have)
            return T.DEPLOY_ACK, {"have": have}, []
        if msg.type == T.DEPLOY_CHUNK:
            sha, offset = m.get("sha256"), int(m.get("offset", -1))
            part = self._part(sha)
            if sha not in self.uploads:
                raise DeployError("chunk for an upload that was not begun; send DEPLOY_BEGIN first")
            data = msg.arrays[0].tobytes() if msg.arrays else b""
            if zlib.crc32(data) != m.get("crc32"):
                raise DeployError(f"chunk at {offset}: CRC32 mismatch; resend it")
            have = part.stat().st_size if part.exists() else 0
            if offset != have:  # out of order (a retry after a lost ack): tell the host where we are
                return T.DEPLOY_ACK, {"have": have}, []
            if have + len(data) > self.uploads[sha]:
                raise DeployError(f"chunk at {offset} runs past the announced size {self.uploads[sha]}")
            with open(part, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return T.DEPLOY_ACK, {"have": have + len(data)}, []
        if msg.type == T.DEPLOY_COMMIT:
            return T.DEPLOY_ACK, self._commit(m.get("sha256")), []
        raise EdgertError(f"the agent does not take {msg.type.name} messages; adaptation runs in `edgert daemon`")

    def _commit(self, sha: str) -> dict[str, Any]:
        part, final = self._part(sha), self.artifacts / f"{sha}.edgert"
        if not final.exists():
            if not part.exists() or part.stat().st_size != self.uploads.get(sha):
                have = part.stat().st_size if part.exists() else 0
                raise DeployError(f"upload incomplete ({have} of {self.uploads.get(sha)} bytes); resume the deploy")
            h = hashlib.sha256()
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != sha:
                part.unlink()
                raise DeployError("the uploaded bytes do not match their SHA-256; deploy again")
            os.replace(part, final)
            _fsync_dir(self.artifacts)
        try:
            engine = Engine(Artifact.read(final))  # verifies every member and that it runs on this board
        except EdgertError as e:
            final.unlink(missing_ok=True)
            raise DeployError(f"the upload is not a usable artifact: {e}") from None
        tmp = self.store / ".current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(final.relative_to(self.store))
        os.replace(tmp, self.current)
        _fsync_dir(self.store)
        self.engine, self.sha = engine, sha
        self.uploads.pop(sha, None)
        self.log("switched", artifact=final.name)
        return {"have": final.stat().st_size, "switched": sha}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def deploy(url: str | Link, artifact: str | Path, chunk: int = CHUNK,
           progress: Callable[[int, int], None] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Stream ``artifact`` to the agent at ``url``; resumes where a previous attempt stopped.

    Returns {"sha256", "size", "resumed_at", "sent", "seconds"}. A dropped link raises LinkError:
    run it again and it continues from the bytes the agent already holds.
    """
    artifact = Path(artifact)
    Artifact.read(artifact)  # never send something the agent would refuse
    data = artifact.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    link = url if isinstance(url, Link) else Link(open_client(url))
    t0 = time.perf_counter()
    try:
        have = start = link.request(T.DEPLOY_BEGIN, {"name": artifact.name, "size": len(data), "sha256": sha},
                                    timeout=timeout).meta["have"]
        while have < len(data):
            piece = data[have:have + chunk]
            have = link.request(T.DEPLOY_CHUNK, {"sha256": sha, "offset": have, "crc32": zlib.crc32(piece)},
                                [np.frombuffer(piece, np.uint8)], timeout=timeout).meta["have"]
            if progress:
                progress(have, len(data))
        link.request(T.DEPLOY_COMMIT, {"sha256": sha}, timeout=timeout)
    finally:
        if not isinstance(url, Link):
            link.close()
    return {"sha256": sha, "size": len(data), "resumed_at": start, "sent": len(data) - start,
            "seconds": time.perf_counter() - t0}


def run_remote(url: str, artifact: str | Path, x: np.ndarray, timeout: float = 30.0
               ) -> tuple[list[np.ndarray], float]:
    """Run ``x`` on the agent at ``url``, checking it runs ``artifact``; outputs and the board's latency (ms)."""
    sha = file_sha256(Path(artifact))
    link = Link(open_client(url))
    try:
        board = link.request(T.PING, timeout=timeout).meta.get("artifact")
        if board != sha:
            raise LinkError(f"the board runs {'no artifact' if board is None else 'artifact ' + board[:12]}, not "
                            f"{Path(artifact).name} ({sha[:12]}); deploy it first: edgert deploy {artifact} "
                            f"--port {url}")
        r = link.request(T.INFER, arrays=[x], timeout=timeout)
    finally:
        link.close()
    return r.arrays, float(r.meta["latency_ms"])
