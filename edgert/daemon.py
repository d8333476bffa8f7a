"""The on-device daemon: serve inference over a link, adapt as it goes, never lose what it learned.

``edgert daemon ARTIFACT --source URL --adapt POLICY --state-dir DIR`` loads the artifact, wraps it in
an adaptation policy (edgert.runtime.adapt), resumes the newest valid checkpoint from DIR (older ones
when it is corrupt, the artifact's source parameters when none is valid), then serves requests:

- ``serial:///dev/ttyX?baud=N``, ``socket://host:port`` (listens) and ``stdin`` speak edgert.link frames;
- ``dir://PATH`` processes each ``X.npy`` once, writing ``X.out.npy`` (or ``X.err.txt``) beside it.

The adapted state is checkpointed atomically every N samples or T seconds, on a SNAPSHOT request and on
SIGTERM/SIGINT. Logs are JSON lines on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgert import __version__
from edgert.atomic import atomic_write
from edgert.errors import EdgertError, InputError
from edgert.link.messages import Message, T
from edgert.link.server import Reply, serve
from edgert.runtime.adapt import make_policy
from edgert.runtime.checkpoint import load_newest, save_checkpoint
from edgert.runtime.engine import load


class Log:
    """Structured log: one JSON object per line on a stream; verbose events only with --verbose."""

    def __init__(self, stream=None, verbose: bool = False):
        self.stream, self.verbose = stream or sys.stderr, verbose

    def __call__(self, event: str, verbose: bool = False, **fields: Any) -> None:
        if verbose and not self.verbose:
            return
        self.stream.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}, default=str) + "\n")
        self.stream.flush()


class Daemon:
    """One artifact, one policy, one state directory."""

    def __init__(self, artifact: str | Path, policy: str = "none", state_dir: str | Path = "state",
                 checkpoint_every: int = 1000, checkpoint_seconds: float = 60.0, keep: int = 3,
                 log: Log | None = None, **policy_options: Any):
        self.log = log or Log()
        self.artifact_path = Path(artifact)
        self.engine = load(artifact)
        self.policy_name = policy
        self.policy = make_policy(policy, self.engine, **policy_options)
        self.artifact_digest = hashlib.sha256(
            json.dumps(self.engine.artifact.manifest["members"], sort_keys=True).encode()).hexdigest()[:16]
        self.state_dir = Path(state_dir)
        self.every, self.seconds, self.keep = checkpoint_every, checkpoint_seconds, keep
        self.samples = self.requests = self.errors = self.labels = self.checkpoints = 0
        self.seq = 0
        self.resumed_from: str = "source"
        self._stop = False
        self._last_ckpt_samples, self._last_ckpt_time = 0, time.monotonic()
        self._started = time.monotonic()
        self.resume()

    # --- state -------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the newest valid checkpoint; fall back to older ones, then to the source parameters."""
        def accept(state: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
            if meta.get("policy") != self.policy_name:
                raise ValueError(f"written by policy {meta.get('policy')!r}, not {self.policy_name!r}")
            if meta.get("artifact") != self.artifact_digest:
                raise ValueError("written for a different artifact")
            try:
                self.policy.load_state_dict(state)
            except Exception:
                self.policy.reset()
                raise

        for stale in self.state_dir.glob(".ckpt-*.tmp"):  # left by a kill during a write; never valid
            stale.unlink(missing_ok=True)
        path, meta, skipped = load_newest(self.state_dir, accept)
        for name, reason in skipped:
            self.log("checkpoint_skipped", file=name, reason=reason)
        if path is None:
            self.policy.reset()
            self.resumed_from = "source"
            self.log("resume", source="source parameters", reason="no valid checkpoint" if skipped
                     else "no checkpoint yet", state_dir=str(self.state_dir))
            return
        self.seq, self.samples = int(meta["seq"]), int(meta["samples"])
        self._last_ckpt_samples = self.samples
        self.resumed_from = path.name
        self.log("resume", source="checkpoint", file=path.name, samples=self.samples,
                 fallback=bool(skipped))

    def checkpoint(self, why: str) -> Path:
        self.seq += 1
        path = save_checkpoint(self.state_dir, self.seq, self.policy.state_dict(),
                               {"policy": self.policy_name, "artifact": self.artifact_digest,
                                "samples": self.samples, "edgert_version": __version__}, keep=self.keep)
        self.checkpoints += 1
        self._last_ckpt_samples, self._last_ckpt_time = self.samples, time.monotonic()
        self.log("checkpoint", file=path.name, samples=self.samples, why=why, verbose=why != "stop")
        return path

    def maybe_checkpoint(self) -> None:
        new = self.samples - self._last_ckpt_samples
        if new >= self.every:
            self.checkpoint("samples")
        elif new and time.monotonic() - self._last_ckpt_time >= self.seconds:
            self.checkpoint("time")

    # --- requests ----------------------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        t0 = time.perf_counter()
        y = self.policy.run(x)
        ms = (time.perf_counter() - t0) * 1e3
        self.samples += len(x)
        return (y if isinstance(y, list) else [y]), ms

    def stats(self) -> dict[str, Any]:
        return {"samples": self.samples, "requests": self.requests, "errors": self.errors,
                "labels": self.labels, "checkpoints": self.checkpoints, "resumed_from": self.resumed_from,
                "uptime_s": round(time.monotonic() - self._started, 3), "policy": self.policy.stats(),
                "artifact": self.artifact_path.name}

    def handle(self, msg: Message) -> Reply:
        self.requests += 1
        try:
            return self._handle(msg)
        except Exception:
            self.errors += 1
            raise

    def _handle(self, msg: Message) -> Reply:
        if msg.type == T.INFER:
            if len(msg.arrays) != 1:
                raise InputError(f"INFER carries one input array, got {len(msg.arrays)}")
            ys, ms = self.infer(msg.arrays[0])
            self.maybe_checkpoint()
            return T.RESULT, {"latency_ms": ms, "samples": self.samples}, ys
        if msg.type == T.PING:
            return T.PONG, {"edgert_version": __version__, "artifact": self.artifact_path.name}, []
        if msg.type == T.STATS:
            return T.STATS_REPLY, self.stats(), []
        if msg.type == T.LABEL:
            self.labels += 1
            feedback = getattr(self.policy, "feedback", None)
            if feedback is not None:
                feedback(msg.meta.get("for"), msg.meta.get("label"))
            return T.LABEL_ACK, {"used": feedback is not None}, []
        if msg.type == T.RESET:
            self.policy.reset()
            path = self.checkpoint("reset")  # so a restart does not bring back what was reset
            return T.RESET_ACK, {"checkpoint": path.name}, []
        if msg.type == T.SNAPSHOT:
            return T.SNAPSHOT_ACK, {"checkpoint": self.checkpoint("request").name, "samples": self.samples}, []
        raise EdgertError(f"the daemon does not take {msg.type.name} messages; deploy artifacts to "
                          "`edgert agent`")

    # --- sources -----------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop = True

    def run(self, source: str) -> None:
        """Serve ``source`` until SIGTERM/SIGINT (or the end of stdin), then checkpoint."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        self.log("start", artifact=str(self.artifact_path), source=source, policy=self.policy_name,
                 pid=os.getpid(), every=self.every, seconds=self.seconds)
        try:
            if source.startswith("dir://"):
                self._run_dir(Path(source[len("dir://"):]))
            else:
                serve(source, self.handle, lambda: self._stop, self.maybe_checkpoint, self.log)
        finally:
            self.checkpoint("stop")
            self.log("stop", samples=self.samples, requests=self.requests, errors=self.errors)

    def _run_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise EdgertError(f"dir://{folder}: no such folder")
        while not self._stop:
            todo = [p for p in sorted(folder.glob("*.npy")) if not p.name.endswith(".out.npy")
                    and not p.with_suffix(".out.npy").exists() and not p.with_suffix(".err.txt").exists()]
            for p in todo:
                if self._stop:
                    break
                self._process_file(p)
                self.maybe_checkpoint()
            if not todo:
                self.maybe_checkpoint()
                time.sleep(0.1)

    def _process_file(self, p: Path) -> None:
        self.requests += 1
        try:
            x = np.load(p, allow_pickle=False)
            ys, ms = self.infer(x)
            atomic_write(p.with_suffix(".out.npy"), lambda f: np.save(f, ys[0] if len(ys) == 1 else np.stack(ys)))
            self.log("processed", file=p.name, latency_ms=round(ms, 3), verbose=True)
        except Exception as e:
            self.errors += 1
            atomic_write(p.with_suffix(".err.txt"), lambda f: f.write(f"{type(e).__name__}: {e}\n".encode()))
            self.log("input_error", file=p.name, kind=type(e).__name__, message=str(e))


