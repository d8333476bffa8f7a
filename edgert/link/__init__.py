"""The serial link: framed, versioned messages over pyserial ports and sockets (see framing.py)."""

from edgert.link.framing import MAX_FRAME, VERSION, BadFrame, FrameReader, cobs_decode, cobs_encode, encode_frame
from edgert.link.link import Link
from edgert.link.messages import LinkError, Message, RemoteError, T, decode_payload, encode_payload
from edgert.link.ports import Listener, PortClosed, open_client

__all__ = ["MAX_FRAME", "VERSION", "BadFrame", "FrameReader", "Link", "LinkError", "Listener", "Message",
           "PortClosed", "RemoteError", "T", "cobs_decode", "cobs_encode", "decode_payload", "encode_frame",
           "encode_payload", "open_client"]
