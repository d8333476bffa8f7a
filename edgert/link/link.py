"""Link: send and receive Messages over a port, counting what was dropped; a blocking request helper."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from edgert.link.framing import MAX_FRAME, BadFrame, Frame, FrameReader, encode_frame
from edgert.link.messages import LinkError, Message, RemoteError, T, decode_payload, encode_payload
from edgert.link.ports import PortClosed


def to_message(f: Frame) -> Message | BadFrame:
    """A frame with a good CRC as a Message, or a BadFrame (with its request id) when its type is
    unknown or its payload undecodable, so the other end can be told which request failed."""
    try:
        mtype = T(f.type)
    except ValueError:
        return BadFrame(f"unknown message type {f.type}", f.rid)
    try:
        meta, arrays = decode_payload(f.payload)
    except LinkError as e:
        return BadFrame(str(e), f.rid)
    return Message(mtype, f.rid, meta, arrays)


class Link:
    """One framed conversation over a port (see ports.py); never raises on bad frames."""

    def __init__(self, port, max_frame: int = MAX_FRAME):
        self.port, self.max_frame = port, max_frame
        self.reader = FrameReader(max_frame)
        self.pending: list[Message | BadFrame] = []
        self._rid = itertools.count(1)

    def next_rid(self) -> int:
        return next(self._rid)

    def send(self, mtype: T, rid: int = 0, meta: dict[str, Any] | None = None,
             arrays: list[np.ndarray] | None = None) -> None:
        payload = encode_payload(meta or {}, arrays or [])
        if len(payload) + 10 > self.max_frame:
            raise LinkError(f"message of {len(payload)} bytes exceeds the link's maximum frame of "
                            f"{self.max_frame}; send a smaller batch")
        self.port.write(encode_frame(int(mtype), rid, payload))

    def poll(self) -> Message | BadFrame | None:
        """The next message or dropped frame if one arrives within the port's timeout, else None."""
        if not self.pending:
            for ev in self.reader.feed(self.port.read(65536)):
                self.pending.append(to_message(ev) if isinstance(ev, Frame) else ev)
        return self.pending.pop(0) if self.pending else None

    def request(self, mtype: T, meta: dict[str, Any] | None = None, arrays: list[np.ndarray] | None = None,
                timeout: float = 10.0) -> Message:
        """Send a request and wait for its reply; an ERROR reply raises RemoteError."""
        rid = self.next_rid()
        deadline = time.monotonic() + timeout
        try:
            self.send(mtype, rid, meta, arrays)
            return self._wait(mtype, rid, deadline, timeout)
        except PortClosed as e:
            raise LinkError(f"the link dropped during {mtype.name}: {e}") from None

    def _wait(self, mtype: T, rid: int, deadline: float, timeout: float) -> Message:
        while time.monotonic() < deadline:
            ev = self.poll()
            if isinstance(ev, Message) and ev.rid == rid:
                if ev.type == T.ERROR:
                    raise RemoteError(ev.meta.get("kind", "Error"), ev.meta.get("message", ""))
                return ev
        raise LinkError(f"no reply to {mtype.name} within {timeout:g} s; is the daemon or agent running "
                        "on that port?")

    def close(self) -> None:
        self.port.close()
