"""Message types and payloads: a JSON header plus raw arrays (dtype + shape + bytes, never pickle)."""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgert.errors import EdgertError


class LinkError(EdgertError):
    """The link failed: no reply in time, a malformed message, or the other end reported an error."""


class RemoteError(LinkError):
    """The other end answered a request with an error reply."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class T(enum.IntEnum):
    """Message types. Requests are even-numbered with their reply at the next odd number, except ERROR."""

    PING = 2
    PONG = 3
    INFER = 4          # arrays: the input batch; meta: {"label": optional}
    RESULT = 5         # arrays: outputs; meta: {"latency_ms": measured on the board}
    LABEL = 6          # feedback for an earlier request: meta {"for": rid, "label": int}
    LABEL_ACK = 7
    STATS = 8
    STATS_REPLY = 9
    RESET = 10         # adaptation back to the source parameters
    RESET_ACK = 11
    SNAPSHOT = 12      # checkpoint now
    SNAPSHOT_ACK = 13
    DEPLOY_BEGIN = 14  # meta {"name", "size", "sha256"} -> reply {"have": bytes already received}
    DEPLOY_ACK = 15
    DEPLOY_CHUNK = 16  # meta {"sha256", "offset", "crc32"}, arrays: [uint8 bytes] -> DEPLOY_ACK {"have"}
    DEPLOY_COMMIT = 18  # meta {"sha256"}: verify the whole artifact, then switch to it -> DEPLOY_ACK
    ERROR = 1          # meta {"kind", "message"}; rid of the failed request (0 when unreadable)


_LEN = struct.Struct("<I")
_KINDS = "biuf"  # bool, signed, unsigned, float: plain numbers only


@dataclass
class Message:
    type: T
    rid: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: list[np.ndarray] = field(default_factory=list)


def encode_payload(meta: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    """u32 header length, JSON header (meta plus dtype and shape of each array), raw array bytes."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    for a in arrays:
        if a.dtype.kind not in _KINDS:
            raise LinkError(f"cannot send an array of dtype {a.dtype}; only bool, int, uint and float")
    head = dict(meta, _arrays=[[a.dtype.str, list(a.shape)] for a in arrays])
    hb = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(hb)), hb, *(a.tobytes() for a in arrays)])


def decode_payload(payload: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Invert encode_payload; raises LinkError naming what is malformed."""
    if len(payload) < _LEN.size:
        raise LinkError("payload shorter than its header length")
    n = _LEN.unpack_from(payload)[0]
    try:
        meta = json.loads(payload[_LEN.size:_LEN.size + n])
        specs = meta.pop("_arrays")
        if not isinstance(meta, dict):
            raise ValueError("header is not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LinkError(f"malformed message header: {e}") from None
    arrays, pos = [], _LEN.size + n
    for spec in specs:
        try:
            dtype, shape = np.dtype(spec[0]), tuple(int(d) for d in spec[1])
        except (TypeError, ValueError, IndexError) as e:
            raise LinkError(f"malformed array description {spec!r}: {e}") from None
        if dtype.kind not in _KINDS or dtype.hasobject or any(d < 0 for d in shape) or len(shape) > 32:
            raise LinkError(f"array of dtype {dtype} and shape {shape} is not allowed on the link")
        count = math.prod(shape)  # Python ints: no overflow from a hostile shape
        size = dtype.itemsize * count
        if pos + size > len(payload):
            raise LinkError(f"array {dtype}{list(shape)} needs {size} bytes, the frame has {len(payload) - pos}")
        arrays.append(np.frombuffer(payload, dtype, count, pos).reshape(shape).copy())
        pos += size
    if pos != len(payload):
        raise LinkError(f"{len(payload) - pos} stray bytes after the arrays")
    return meta, arrays
