"""A tiny artifact compiled once for every link, daemon and deploy test, and helpers to drive processes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgert import ir
from edgert.compilers.compile import build_artifact

ROOT = Path(__file__).resolve().parents[2]


def tiny_graph(seed: int = 0) -> ir.Graph:
    """Conv-ReLU-Linear on [N, 1, 4, 4] -> [N, 3]."""
    rng = np.random.default_rng(seed)
    p = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 1, 4, 4))),),
        nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1),
               ir.Relu(name="r", inputs=("y",), output="z"),
               ir.Flatten(name="f", inputs=("z",), output="f"),
               ir.Linear(name="l", inputs=("f", "lw", "lb"), output="out")),
        outputs=("out",), params={"w": p(2, 1, 3, 3), "b": p(2), "lw": p(3, 32), "lb": p(3)})


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    return build_artifact(tiny_graph(), "x86-host").save(tmp_path_factory.mktemp("link") / "tiny.edgert")


@pytest.fixture(scope="session")
def tiny_artifact_b(tmp_path_factory) -> Path:
    """A second model (other weights) to deploy over the first."""
    return build_artifact(tiny_graph(seed=1), "x86-host").save(tmp_path_factory.mktemp("link") / "tiny_b.edgert")


class Proc:
    """A child process running `edgert ...` (with the test-only policy registered); JSON logs queued."""

    def __init__(self, *args: str):
        self.p = subprocess.Popen([sys.executable, "-m", "tests.link.edgert_main", *map(str, args)], cwd=ROOT,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        self.events: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.p.stderr:
            self.log.append(line)
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def wait_for(self, event: str, timeout: float = 30.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                if self.p.poll() is not None and self.events.empty():
                    break
                continue
            if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                return ev
        raise AssertionError(f"no {event!r} event; log:\n{''.join(self.log)}")

    def signal(self, sig: int) -> int:
        self.p.send_signal(sig)
        return self.p.wait(timeout=30)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        started.append(Proc(*args))
        return started[-1]

    yield start
    for p in started:
        p.close()


def free_port_url(proc: Proc) -> str:
    ev = proc.wait_for("listening")
    return "socket://" + ev["address"]


os.environ.setdefault("PYTHONHASHSEED", "0")
