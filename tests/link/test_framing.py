"""Framing and messages over pyserial's loop://: COBS against its definition, CRC, garbage, truncation, size."""

import json
import struct

import numpy as np
import pytest

from edgert.link import (BadFrame, FrameReader, Link, LinkError, Message, T, cobs_decode, cobs_encode,
                         decode_payload, encode_frame, encode_payload, open_client)


def _cobs_ref(data: bytes) -> bytes:
    """COBS written from the paper's description: each block = (distance to next zero) + non-zero bytes."""
    out, block = bytearray(), bytearray()
    for b in data + b"\x00":
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block.clear()
    return bytes(out)


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 508, 1000])
def test_cobs_round_trip_has_no_zero_and_matches_reference(n):
    rng = np.random.default_rng(n)
    for zeros in (0.0, 0.1, 1.0):
        data = rng.integers(1, 256, n, dtype=np.uint8)
        data[rng.random(n) < zeros] = 0
        data = data.tobytes()
        enc = cobs_encode(data)
        assert b"\x00" not in enc
        assert cobs_decode(enc) == data
        if n % 254 or not n or zeros:  # the reference adds a final empty block after an exact 254-run
            assert enc == _cobs_ref(data)


def test_payload_round_trip_without_pickle():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 3)).astype(np.float32), np.arange(5, dtype=np.int64), np.zeros((0, 4), bool)]
    meta, back = decode_payload(encode_payload({"label": 3}, arrays))
    assert meta == {"label": 3}
    for a, b in zip(arrays, back):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    with pytest.raises(LinkError, match="only bool, int, uint and float"):
        encode_payload({}, [np.array(["x"], object)])


def test_object_dtype_and_short_payload_are_refused():
    good = encode_payload({}, [np.zeros(3, np.float32)])
    evil = good.replace(b'"<f4"', b'"|O8"')
    with pytest.raises(LinkError, match="not allowed"):
        decode_payload(evil)
    with pytest.raises(LinkError, match="needs 12 bytes"):
        decode_payload(good[:-1])
    hb = json.dumps({"_arrays": [["<f4", [2**32, 2**32]]]}).encode()
    huge = struct.pack("<I", len(hb)) + hb + bytes(4)
    with pytest.raises(LinkError, match="needs 73786976294838206464 bytes"):
        decode_payload(huge)  # would overflow int64 arithmetic


def _loop():
    return Link(open_client("loop://", timeout=0.01), max_frame=4096)


def _drain(link, n=20):
    out = []
    for _ in range(n):
        ev = link.poll()
        if ev is not None:
            out.append(ev)
    return out


def test_messages_over_loop():
    link = _loop()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    link.send(T.INFER, 7, {"label": 1}, [x])
    link.send(T.PING, 8)
    ev = _drain(link)
    assert [(m.type, m.rid) for m in ev] == [(T.INFER, 7), (T.PING, 8)]
    assert np.array_equal(ev[0].arrays[0], x) and ev[0].meta == {"label": 1}


def test_garbage_truncated_and_corrupt_frames_are_counted_and_skipped():
    link = _loop()
    port = link.port
    good = encode_frame(T.PING, 1, encode_payload({}, []))
    port.write(b"\x13\x37garbage\xff\xfe")                  # line noise, then a frame
    port.write(good)
    port.write(good[:len(good) // 2])                        # a frame cut off mid-way ...
    port.write(encode_frame(T.PING, 2, encode_payload({}, [])))  # ... the next frame's leading 0 ends it
    flipped = bytearray(encode_frame(T.PING, 3, encode_payload({}, [])))
    flipped[-3] = flipped[-3] ^ 0x01 or 0x02                 # a bit flipped (never to 0): CRC catches it
    port.write(bytes(flipped))
    port.write(encode_frame(99, 4, encode_payload({}, [])))  # good CRC, unknown type
    port.write(encode_frame(T.PING, 5, b"\x01"))             # good CRC, malformed payload
    port.write(encode_frame(T.PING, 6, encode_payload({}, [])))
    ev = _drain(link)
    kinds = [(type(e).__name__, e.rid) for e in ev]
    assert kinds == [("BadFrame", 0), ("Message", 1), ("BadFrame", 0), ("Message", 2), ("BadFrame", 0),
                     ("BadFrame", 4), ("BadFrame", 5), ("Message", 6)]
    assert "CRC32" in ev[4].reason and "unknown message type 99" in ev[5].reason
    assert link.reader.counts["corrupt"] == 3 and link.reader.counts["frames"] == 5


def test_oversized_frame_is_dropped_and_the_next_one_served():
    link = _loop()
    big = np.ones(5000, np.float32)
    with pytest.raises(LinkError, match="exceeds the link's maximum frame"):
        link.send(T.INFER, 1, {}, [big])
    wire = encode_frame(T.INFER, 1, encode_payload({}, [big]))  # from a peer with a larger limit
    ev = []
    for i in range(0, len(wire), 1024):  # loop:// buffers 4 kB, so read while writing
        link.port.write(wire[i:i + 1024])
        ev += _drain(link, 2)
    link.send(T.PING, 2)
    ev += _drain(link, 5)
    assert isinstance(ev[0], BadFrame) and "exceeds the maximum of 4096" in ev[0].reason
    assert isinstance(ev[1], Message) and ev[1].rid == 2
    assert link.reader.counts["oversized"] == 1


def test_reader_handles_byte_at_a_time_delivery():
    frames = b"".join(encode_frame(T.PING, i, encode_payload({"i": i}, [np.arange(i)])) for i in range(1, 30))
    reader = FrameReader()
    got = [e for b in frames for e in reader.feed(bytes([b]))]
    assert [e.rid for e in got] == list(range(1, 30))
