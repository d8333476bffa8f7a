"""Frames on a byte stream: COBS byte stuffing, a CRC32, a version byte and a maximum size.

A frame on the wire is ``0x00 | COBS(body) | 0x00`` where ``body`` is

    version (u8) | type (u8) | request id (u32 LE) | payload | CRC32 of everything before it (u32 LE)

COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", 1999) removes every zero byte from the
body, so 0x00 only ever delimits frames: after garbage, a dropped byte or a cable glitch the reader
resynchronises at the next zero. The leading 0x00 ends any garbage the line picked up before the
frame, so noise costs at most the frame it touches. Bad frames are reported as events, never raised.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 1
HEADER = struct.Struct("<BBI")  # version, type, request id
CRC = struct.Struct("<I")
MAX_FRAME = 1 << 20  # bytes of body; a bigger frame is dropped and answered with an error
OVERHEAD = HEADER.size + CRC.size


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data``: the result holds no zero byte and is at most len/254 + 1 bytes longer."""
    out = bytearray()
    for part in data.split(b"\x00"):
        while len(part) >= 254:
            out.append(255)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    """Invert cobs_encode; raises ValueError on a malformed encoding (a zero, a block past the end)."""
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS block")
        j = i + code
        if j > n:
            raise ValueError("COBS block runs past the end of the frame")
        out += enc[i + 1:j]
        i = j
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(mtype: int, rid: int, payload: bytes) -> bytes:
    """The bytes to write for one frame (delimiters included)."""
    body = HEADER.pack(VERSION, mtype, rid & 0xFFFFFFFF) + payload
    body += CRC.pack(zlib.crc32(body))
    return b"\x00" + cobs_encode(body) + b"\x00"


@dataclass(frozen=True)
class Frame:
    type: int
    rid: int
    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    """A frame that was dropped: why, and its request id when the header was readable."""

    reason: str
    rid: int = 0


class FrameReader:
    """Incremental decoder: feed() bytes as they arrive, get Frames and BadFrames back in order."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self.max_encoded = max_frame + max_frame // 254 + 2
        self.buf = bytearray()
        self.skipping = False  # inside an oversized frame: drop bytes until the next delimiter
        self.skipped = 0
        self.counts = {"frames": 0, "corrupt": 0, "oversized": 0, "bytes": 0}

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self.counts["bytes"] += len(data)
        events: list[Frame | BadFrame] = []
        start = 0
        while True:
            z = data.find(b"\x00", start)
            chunk = data[start:] if z < 0 else data[start:z]
            if self.skipping:
                self.skipped += len(chunk)
            else:
                self.buf += chunk
                if len(self.buf) > self.max_encoded:
                    self.skipping, self.skipped = True, len(self.buf)
                    self.buf.clear()
            if z < 0:
                return events
            if self.skipping:
                self.counts["oversized"] += 1
                events.append(BadFrame(f"frame of more than {self.skipped} bytes exceeds the maximum of "
                                       f"{self.max_frame}; send smaller batches"))
                self.skipping = False
            elif self.buf:
                events.append(self._decode(bytes(self.buf)))
                self.buf.clear()
            start = z + 1

    def _decode(self, enc: bytes) -> Frame | BadFrame:
        try:
            body = cobs_decode(enc)
        except ValueError as e:
            return self._bad(f"corrupt frame ({e})")
        if len(body) < OVERHEAD:
            return self._bad(f"corrupt frame (only {len(body)} bytes, a frame has at least {OVERHEAD})")
        version, mtype, rid = HEADER.unpack_from(body)
        if CRC.unpack_from(body, len(body) - CRC.size)[0] != zlib.crc32(body[:-CRC.size]):
            return self._bad("corrupt frame (CRC32 mismatch)")
        if len(body) > self.max_frame:
            self.counts["oversized"] += 1
            return BadFrame(f"frame of {len(body)} bytes exceeds the maximum of {self.max_frame}", rid)
        if version != VERSION:
            self.counts["corrupt"] += 1
            return BadFrame(f"protocol version {version}, this side speaks {VERSION}; upgrade edgert on "
                            "both ends", rid)
        self.counts["frames"] += 1
        return Frame(mtype, rid, body[HEADER.size:-CRC.size])

    def _bad(self, reason: str) -> BadFrame:
        self.counts["corrupt"] += 1
        return BadFrame(reason)
