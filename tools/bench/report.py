"""Timing and reporting shared by the benchmarks: interleaved repeats, min/median, BENCHMARKS.md sections."""

from __future__ import annotations

import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

BENCHMARKS = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15,
                     min_seconds: float = 0.05) -> dict[str, list[float]]:
    """Seconds per call of each fn, ``rounds`` samples each, peers alternating so drift hits all alike."""
    loops = {}
    for name, fn in fns.items():
        fn()  # warm up (JIT, caches, lazy allocation)
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        loops[name] = max(1, int(min_seconds / once))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / loops[name])
    return samples


def summarize(samples: dict[str, list[float]], baseline: str) -> list[tuple[str, float, float, float]]:
    """(name, min ms, median ms, median ratio vs baseline: >1 means faster than the baseline)."""
    base = statistics.median(samples[baseline])
    return [(n, min(s) * 1e3, statistics.median(s) * 1e3, base / statistics.median(s))
            for n, s in samples.items()]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {platform.machine()}, Python {platform.python_version()}"


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between <!-- bench:NAME --> markers in BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else (
        "# Benchmarks\n\nRegenerate with `make bench` (or `python -m tools.bench NAME`). Every table was "
        "measured in one run, peers side by side, one thread each.\n")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)
