"""The device side of the link: serve framed requests from a source URL until told to stop.

Sources: ``serial:///dev/ttyX?baud=N`` (reopened after a cable drop), ``socket://host:port`` (listens,
one connection at a time, the next accepted when one closes) and ``stdin`` (frames on stdin/stdout).
Every request gets exactly one reply; a bad frame or a failing request gets an ERROR reply and the
next frame is served.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

import numpy as np

from edgert.errors import EdgertError
from edgert.link.framing import MAX_FRAME, BadFrame
from edgert.link.link import Link
from edgert.link.messages import LinkError, Message, T
from edgert.link.ports import Listener, PipePort, PortClosed, SerialPort, parse_serial_url

Reply = tuple[T, dict[str, Any], list[np.ndarray]]
Handler = Callable[[Message], Reply]


def error_reply(e: BaseException) -> Reply:
    kind = type(e).__name__ if isinstance(e, EdgertError) else "InternalError"
    return T.ERROR, {"kind": kind, "message": str(e)}, []


def serve_link(link: Link, handle: Handler, stop: Callable[[], bool], idle: Callable[[], None],
               log: Callable[..., None]) -> None:
    """Answer messages on ``link`` until ``stop()``; PortClosed propagates to the caller."""
    while not stop():
        ev = link.poll()
        if ev is None:
            idle()
            continue
        if isinstance(ev, BadFrame):
            log("bad_frame", reason=ev.reason, rid=ev.rid, verbose=True)
            link.send(T.ERROR, ev.rid, {"kind": "FrameError", "message": ev.reason})
            continue
        try:
            rtype, meta, arrays = handle(ev)
        except EdgertError as e:
            rtype, meta, arrays = error_reply(e)
        except Exception as e:  # a bug must not take the service down; log it, answer, carry on
            log("internal_error", message=str(e), traceback=traceback.format_exc())
            rtype, meta, arrays = error_reply(e)
        try:
            link.send(rtype, ev.rid, meta, arrays)
        except LinkError as e:
            link.send(T.ERROR, ev.rid, error_reply(e)[1])
        idle()


def serve(source: str, handle: Handler, stop: Callable[[], bool], idle: Callable[[], None],
          log: Callable[..., None], max_frame: int = MAX_FRAME) -> None:
    """Serve ``source`` until ``stop()``: reopen serial ports, accept socket connections in turn."""
    if source == "stdin":
        try:
            serve_link(Link(PipePort(), max_frame), handle, stop, idle, log)
        except PortClosed as e:
            log("source_closed", source=source, reason=str(e))
        return
    if source.startswith("socket://"):
        listener = Listener(source)
        log("listening", source=source, address=f"{listener.address[0]}:{listener.address[1]}")
        try:
            while not stop():
                port = listener.accept()
                if port is None:
                    idle()
                    continue
                log("connected", source=source, verbose=True)
                try:
                    serve_link(Link(port, max_frame), handle, stop, idle, log)
                except PortClosed as e:
                    log("disconnected", source=source, reason=str(e), verbose=True)
                finally:
                    port.close()
        finally:
            listener.close()
        return
    if source.startswith("serial://"):
        path, baud = parse_serial_url(source)
        opened = False
        while not stop():
            try:
                port = SerialPort(path, baud)
            except PortClosed as e:
                if opened:
                    log("port_unavailable", source=source, reason=str(e), verbose=True)
                    opened = False
                idle()
                time.sleep(0.1)
                continue
            opened = True
            log("port_open", source=source)
            try:
                serve_link(Link(port, max_frame), handle, stop, idle, log)
            except PortClosed as e:
                log("port_closed", source=source, reason=f"{e}; reopening")
            finally:
                try:
                    port.close()
                except Exception:
                    pass
        return
    raise EdgertError(f"unknown source {source!r}; use serial:///dev/ttyX?baud=N, socket://host:port, "
                      "dir://PATH or stdin")
