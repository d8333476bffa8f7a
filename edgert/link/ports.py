"""Byte ports by URL: serial ports and client sockets through pyserial, plus the server-side ends.

Every port offers ``read(n)`` (up to n bytes, b"" after its timeout), ``write(data)`` and ``close()``,
and raises ``PortClosed`` when the other end has gone (cable pulled, socket closed, EOF).
"""

from __future__ import annotations

import os
import select
import socket
import sys
from urllib.parse import parse_qs, urlparse

import serial

from edgert.errors import EdgertError


class PortClosed(Exception):
    """The other end went away; a server reopens or accepts again, a client reports it."""


class SerialPort:
    """A pyserial port (``serial_for_url``): real ports, ``loop://``, ``socket://host:port`` (client)."""

    def __init__(self, url: str, baudrate: int = 115200, timeout: float = 0.05):
        try:
            self.s = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise PortClosed(f"cannot open {url}: {e}") from None
        # pyserial's socket:// reports in_waiting as 0 or 1, so reads would go byte by byte; read what
        # arrived from its socket directly, and send small frames at once (no Nagle delay).
        self.sock = getattr(self.s, "_socket", None)
        if self.sock is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def read(self, n: int) -> bytes:
        try:
            if self.sock is not None:
                if not select.select([self.sock], [], [], self.timeout)[0]:
                    return b""
                data = self.sock.recv(max(n, 65536))
                if not data:
                    raise PortClosed("peer closed the connection")
                return data
            return self.s.read(max(1, min(n, self.s.in_waiting)))
        except (serial.SerialException, OSError) as e:
            raise PortClosed(str(e)) from None

    def write(self, data: bytes) -> None:
        try:
            self.s.write(data)
        except (serial.SerialException, OSError) as e:
            raise PortClosed(str(e)) from None

    def close(self) -> None:
        self.s.close()


class SocketPort:
    """One accepted connection (the server side of ``socket://``)."""

    def __init__(self, sock: socket.socket, timeout: float = 0.05):
        self.sock = sock
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read(self, n: int) -> bytes:
        try:
            data = self.sock.recv(max(n, 65536))
        except socket.timeout:
            return b""
        except OSError as e:
            raise PortClosed(str(e)) from None
        if not data:
            raise PortClosed("peer closed the connection")
        return data

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise PortClosed(str(e)) from None

    def close(self) -> None:
        self.sock.close()


class PipePort:
    """Frames over file descriptors: by default this process's stdin and stdout (``--source stdin``; logs
    go to stderr), or one descriptor ``fd`` read and written both (e.g. a pseudo-terminal's master end),
    which ``close`` then closes."""

    def __init__(self, fd: int | None = None, timeout: float = 0.05):
        self.fd = fd
        self.rfd = sys.stdin.fileno() if fd is None else fd
        self.wfd = sys.stdout.fileno() if fd is None else fd
        self.timeout = timeout

    def read(self, n: int) -> bytes:
        if not select.select([self.rfd], [], [], self.timeout)[0]:
            return b""
        data = os.read(self.rfd, max(n, 65536))
        if not data:
            raise PortClosed("stdin reached end of file")
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def parse_serial_url(url: str) -> tuple[str, int]:
    """``serial:///dev/ttyUSB0?baud=115200`` -> ("/dev/ttyUSB0", 115200)."""
    u = urlparse(url)
    q = parse_qs(u.query)
    try:
        baud = int(q.get("baud", ["115200"])[0])
    except ValueError:
        raise EdgertError(f"{url}: baud must be an integer, e.g. serial:///dev/ttyUSB0?baud=115200") from None
    if not u.path:
        raise EdgertError(f"{url}: no device path; write serial:///dev/ttyUSB0?baud=115200")
    return u.path, baud


def open_client(url: str, timeout: float = 0.05) -> SerialPort:
    """The host side of a link: ``serial:///dev/X?baud=N``, a plain device path, ``socket://``, ``loop://``."""
    if url.startswith("serial://"):
        path, baud = parse_serial_url(url)
        return SerialPort(path, baud, timeout)
    return SerialPort(url, timeout=timeout)


class Listener:
    """``socket://host:port`` on the device side: listen, hand out one connection at a time."""

    def __init__(self, url: str):
        u = urlparse(url)
        if u.port is None:
            raise EdgertError(f"{url}: give a port, e.g. socket://0.0.0.0:5555 (0 picks a free one)")
        self.sock = socket.create_server((u.hostname or "0.0.0.0", u.port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()

    def accept(self) -> SocketPort | None:
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            return None
        return SocketPort(conn)

    def close(self) -> None:
        self.sock.close()
