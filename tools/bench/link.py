"""The daemon under sustained load over a loopback socket and a pseudo-terminal: frames/s, latency, memory.

    python -m tools.bench link [--frames N]

The daemon runs as its own process (`edgert daemon`, policy "none") with a tiny conv model
([1, 1, 4, 4] -> [1, 3]); one client sends INFER requests back to back, each waiting for its reply, so
frames/s is the round-trip rate of one synchronous stream. Latency is per request on the client
(percentiles over every frame). Memory is the daemon's resident set size (VmRSS) sampled every tenth
of the run, after a warm-up. A pty has no baud rate: a real UART at B bit/s carries at most B/10 bytes/s,
so the table also gives the bound that the frame sizes put on a 115200 and a 921600 baud line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

import numpy as np

from edgert import ir
from edgert.compilers.compile import build_artifact
from edgert.link import Link, T, encode_frame, encode_payload, open_client
from edgert.link.ports import PipePort
from tools.bench.report import machine, summarize, time_interleaved, write_section

ROOT = Path(__file__).resolve().parents[2]


def tiny_artifact(path: Path) -> Path:
    rng = np.random.default_rng(0)
    p = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 1, 4, 4))),),
                 nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1),
                        ir.Relu(name="r", inputs=("y",), output="z"),
                        ir.Flatten(name="f", inputs=("z",), output="f"),
                        ir.Linear(name="l", inputs=("f", "lw", "lb"), output="out")),
                 outputs=("out",), params={"w": p(2, 1, 3, 3), "b": p(2), "lw": p(3, 32), "lb": p(3)})
    return build_artifact(g, "x86-host").save(path)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _start(artifact: Path, source: str, state: Path) -> subprocess.Popen:
    env = dict(os.environ, TVM_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "edgert.cli", "daemon", str(artifact), "--source", source,
                          "--state-dir", str(state), "--checkpoint-seconds", "5"], cwd=ROOT, env=env,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    return p


def _wait_line(p: subprocess.Popen, word: str) -> str:
    for line in p.stderr:
        if word in line:
            return line
    raise RuntimeError(f"daemon exited before {word!r}")


def _run(link: Link, n: int, pid: int) -> dict:
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((256, 1, 1, 4, 4)).astype(np.float32)
    for i in range(500):  # warm up
        link.request(T.INFER, arrays=[xs[i % 256]])
    lat = np.empty(n)
    rss = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        link.request(T.INFER, arrays=[xs[i % 256]])
        lat[i] = time.perf_counter() - t
        if i % (n // 10) == 0 or i == n - 1:
            rss.append(_rss_kb(pid))
    wall = time.perf_counter() - t0
    board = link.request(T.STATS).meta
    return {"fps": n / wall, "p50": np.percentile(lat, 50) * 1e3, "p90": np.percentile(lat, 90) * 1e3,
            "p99": np.percentile(lat, 99) * 1e3, "max": lat.max() * 1e3, "rss": rss,
            "errors": board["errors"], "samples": board["samples"]}


def _parts(art_bytes: bytes, x: np.ndarray) -> list:
    from edgert.link import FrameReader
    from edgert.link.link import to_message
    from edgert.runtime.engine import load

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.edgert").write_bytes(art_bytes)
        engine = load(Path(tmp) / "t.edgert")
    wire = encode_frame(T.INFER, 1, encode_payload({}, [x]))
    reader = FrameReader()
    samples = time_interleaved({
        "Engine.run": lambda: engine.run(x),
        "encode a request frame": lambda: encode_frame(T.INFER, 1, encode_payload({}, [x])),
        "decode it": lambda: [to_message(f) for f in reader.feed(wire)],
    })
    return summarize(samples, "Engine.run")


def main(frames: int = 100_000) -> str:
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        art = tiny_artifact(tmp / "tiny.edgert")
        art_bytes = art.read_bytes()
        # socket
        p = _start(art, "socket://127.0.0.1:0", tmp / "s1")
        import json
        addr = json.loads(_wait_line(p, '"listening"'))["address"]
        link = Link(open_client(f"socket://{addr}"))
        rows.append(("loopback socket", _run(link, frames, p.pid)))
        link.close()
        p.send_signal(signal.SIGTERM)
        p.wait()
        # pseudo-terminal (the serial path: pyserial on the daemon side)
        master, slave = os.openpty()
        tty.setraw(slave)
        p = _start(art, f"serial://{os.ttyname(slave)}?baud=115200", tmp / "s2")
        _wait_line(p, '"port_open"')
        os.close(slave)
        link = Link(PipePort(master))
        rows.append(("pseudo-terminal (pyserial)", _run(link, frames, p.pid)))
        link.close()
        p.send_signal(signal.SIGTERM)
        p.wait()
    x = np.zeros((1, 1, 4, 4), np.float32)
    parts = _parts(art_bytes, x)
    req = len(encode_frame(T.INFER, 1, encode_payload({}, [x])))
    rep = len(encode_frame(T.RESULT, 1, encode_payload({"latency_ms": 0.0123456789, "samples": 100000},
                                                       [np.zeros((1, 3), np.float32)])))
    lines = [f"Daemon under load ({frames:,} INFER round trips per transport, one synchronous client, policy "
             f"'none', tiny conv model [1,1,4,4] -> [1,3]); {machine()}; {os.cpu_count()} cores, load average "
             f"{load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (client and daemon share the "
             "cores). Memory is the daemon's VmRSS from after warm-up to the end, sampled every 10% of the "
             "run.", "",
             "| transport | frames/s | p50 ms | p90 ms | p99 ms | max ms | daemon RSS first -> last (max) | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        rss = r["rss"]
        lines.append(f"| {name} | {r['fps']:,.0f} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | "
                     f"{r['max']:.1f} | {rss[0] / 1024:.1f} -> {rss[-1] / 1024:.1f} MB ({max(rss) / 1024:.1f}) "
                     f"| {r['errors']} |")
    lines += ["", f"Frames on the wire: request {req} B, reply {rep} B. A pty has no baud rate; a real UART "
              f"carries baud/10 bytes/s, so one synchronous stream is bounded by about "
              f"{11520 / (req + rep):,.0f} frames/s at 115200 baud and {92160 / (req + rep):,.0f} at 921600 baud, "
              "before any compute.", "",
              "Where a round trip goes (same machine, in one process, median of interleaved runs): "
              + ", ".join(f"{name} {med * 1e3:.1f} us" for name, _, med, _ in parts)
              + ". Each side encodes one frame and decodes one; the rest is system calls and scheduling."]
    md = "\n".join(lines)
    write_section("link", md)
    return md


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--frames") + 1]) if "--frames" in sys.argv else 100_000
    print(main(n))
