"""Checkpoints of adapted state: atomic .npz files (temporary file, fsync, rename), newest valid first.

A checkpoint holds the policy's ``state_dict()`` arrays plus ``__meta__``: JSON (as uint8) with the
sequence number, sample count, policy name, artifact digest and a SHA-256 over every array, so a file
that is truncated, bit-flipped or from another model is recognised and skipped, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert.atomic import atomic_write

PREFIX, SUFFIX = "ckpt-", ".npz"
META = "__meta__"


def state_digest(state: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every array, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        a = np.ascontiguousarray(state[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_files(state_dir: Path) -> list[Path]:
    """Checkpoint files in ``state_dir``, newest (highest sequence number) first."""
    return sorted(Path(state_dir).glob(f"{PREFIX}*{SUFFIX}"), reverse=True)


def save_checkpoint(state_dir: Path, seq: int, state: dict[str, np.ndarray], meta: dict[str, Any],
                    keep: int = 3) -> Path:
    """Write checkpoint number ``seq`` atomically and keep only the newest ``keep``."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if META in state:
        raise ValueError(f"state may not use the reserved name {META!r}")
    meta = dict(meta, seq=seq, saved=time.time(), digest=state_digest(state), names=sorted(state))
    path = state_dir / f"{PREFIX}{seq:012d}{SUFFIX}"
    atomic_write(path, lambda f: np.savez(f, **state, **{META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}))
    for old in checkpoint_files(state_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify one checkpoint; raises ValueError saying what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reading every member checks the zip CRCs
    except Exception as e:  # zipfile, zlib, numpy format and OS errors all mean "unusable"
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if META not in arrays:
        raise ValueError("no metadata (not an edgert checkpoint)")
    try:
        meta = json.loads(arrays.pop(META).tobytes())
    except ValueError as e:
        raise ValueError(f"metadata is not JSON ({e})") from None
    if sorted(arrays) != meta.get("names") or state_digest(arrays) != meta.get("digest"):
        raise ValueError("contents do not match their recorded SHA-256")
    return arrays, meta


def load_newest(state_dir: Path, accept: Callable[[dict[str, np.ndarray], dict[str, Any]], None]
                ) -> tuple[Path | None, dict[str, Any] | None, list[tuple[str, str]]]:
    """Try checkpoints newest first; ``accept(state, meta)`` loads one or raises to reject it.

    Returns (path, meta) of the one loaded, or (None, None) when none is valid, and every file skipped
    with the reason.
    """
    skipped = []
    for path in checkpoint_files(state_dir):
        try:
            state, meta = read_checkpoint(path)
            accept(state, meta)
        except Exception as e:
            skipped.append((path.name, str(e)))
            continue
        return path, meta, skipped
    return None, None, skipped
