"""The sans-IO frame codec: coalescing, fragmentation, loss handling, and hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actr_trio.errors import MalformedEnvelope
from actr_trio.transport._frames import (
    FIRST,
    LAST,
    MAX_FRAME_SIZE,
    MIDDLE,
    WHOLE,
    FrameDecoder,
    FrameEncoder,
    FrameError,
)

packets_st = st.lists(st.binary(max_size=3000), max_size=40)


def _frame(sequence: int, *records: tuple[int, bytes, int | None]) -> bytes:
    out = bytearray(struct.pack(">BI", 1, sequence))
    for kind, data, total in records:
        out += struct.pack(">BI", kind, len(data))
        if total is not None:
            out += struct.pack(">I", total)
        out += data
    return bytes(out)


def test_frame_error_is_a_malformed_envelope() -> None:
    assert issubclass(FrameError, MalformedEnvelope)


def test_small_packets_share_one_frame() -> None:
    encoder = FrameEncoder(1024)
    frames = encoder.encode([b"a" * 10] * 50)
    assert len(frames) == 1
    assert FrameDecoder(1 << 20).feed(frames[0]) == [b"a" * 10] * 50


def test_big_packet_is_fragmented_and_reassembled() -> None:
    encoder = FrameEncoder(1024)
    big = bytes(range(256)) * 40
    frames = encoder.encode([b"x", big, b"y"])
    assert len(frames) > 5
    assert all(len(f) <= 1024 for f in frames)
    decoder = FrameDecoder(1 << 20)
    out = [p for f in frames for p in decoder.feed(f)]
    assert out == [b"x", big, b"y"]


def test_frames_never_exceed_the_sctp_limit() -> None:
    encoder = FrameEncoder(MAX_FRAME_SIZE)
    frames = encoder.encode([b"z" * 300_000, b"q" * 65_000])
    assert max(len(f) for f in frames) <= MAX_FRAME_SIZE


@pytest.mark.parametrize("size", [0, 63, MAX_FRAME_SIZE + 1])
def test_frame_size_is_validated(size: int) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameEncoder(size)


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(packets_st, max_size=6),
    frame_size=st.integers(min_value=64, max_value=4096),
)
def test_round_trip(batches: list[list[bytes]], frame_size: int) -> None:
    encoder = FrameEncoder(frame_size)
    decoder = FrameDecoder(1 << 20)
    for batch in batches:
        frames = encoder.encode(batch)
        assert all(len(f) <= frame_size for f in frames)
        assert [p for f in frames for p in decoder.feed(f)] == batch
    assert decoder.lost == 0
    assert decoder.skipped_frames == 0


@settings(max_examples=200, deadline=None)
@given(packets=packets_st, data=st.data())
def test_lost_frames_lose_packets_never_reorder(packets: list[bytes], data: st.DataObject) -> None:
    """Drop any frames: the rest decodes without error to an ordered subsequence."""
    frames = FrameEncoder(256).encode(packets)
    keep = data.draw(st.lists(st.booleans(), min_size=len(frames), max_size=len(frames)))
    decoder = FrameDecoder(1 << 20)
    out = [p for f, k in zip(frames, keep, strict=True) if k for p in decoder.feed(f)]
    it = iter(packets)
    assert all(any(p == q for q in it) for p in out)
    if all(keep):
        assert out == packets
    assert decoder.skipped_frames <= len(frames)


def test_declared_packet_over_the_cap_is_rejected_before_buffering() -> None:
    decoder = FrameDecoder(1000)
    with pytest.raises(FrameError, match="exceeds"):
        decoder.feed(_frame(0, (FIRST, b"a" * 10, 5000)))
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder(5).feed(_frame(0, (WHOLE, b"a" * 10, None)))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "shorter"),
        (struct.pack(">BI", 2, 0) + struct.pack(">BI", WHOLE, 0), "version"),
        (_frame(0, (7, b"x", None)), "unknown record kind"),
        (_frame(0, (WHOLE, b"abc", None))[:-1], "overruns"),
        (_frame(0, (WHOLE, b"abc", None)) + b"\x00\x00", "truncated record header"),
        (_frame(0, (MIDDLE, b"abc", None)), "without a start"),
        (_frame(0, (FIRST, b"abc", 10), (WHOLE, b"x", None)), "inside a fragmented"),
        (_frame(0, (FIRST, b"abc", 10), (FIRST, b"x", 10)), "inside a fragmented"),
        (_frame(0, (FIRST, b"abc", 3)), "first fragment"),
        (_frame(0, (FIRST, b"abc", 5), (LAST, b"abc", None)), "exceed"),
        (_frame(0, (FIRST, b"abc", 9), (LAST, b"abc", None)), "declared"),
        (struct.pack(">BI", 1, 0) + struct.pack(">BI", FIRST, 0) + b"\x00", "truncated fragment"),
    ],
)
def test_malformed_frames_raise_frame_error(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameDecoder(1 << 20).feed(frame)


@settings(max_examples=500, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_raises_only_frame_error(garbage: bytes) -> None:
    decoder = FrameDecoder(1 << 16)
    try:
        out = decoder.feed(garbage)
    except FrameError:
        return
    assert all(isinstance(p, bytes) for p in out)


@settings(max_examples=300, deadline=None)
@given(packets=packets_st, data=st.data())
def test_truncated_or_corrupted_frames_raise_only_frame_error(
    packets: list[bytes], data: st.DataObject
) -> None:
    frames = FrameEncoder(512).encode(packets)
    if not frames:
        return
    decoder = FrameDecoder(1 << 16)
    index = data.draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[index])
    if data.draw(st.booleans()):
        frame = frame[: data.draw(st.integers(0, len(frame)))]
    else:
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    try:
        for f in [*frames[:index], bytes(frame), *frames[index + 1 :]]:
            decoder.feed(f)
    except FrameError:
        pass


def test_stalled_sender_probe_writes_off_missing_frames() -> None:
    encoder = FrameEncoder(128)
    decoder = FrameDecoder(1 << 16)
    frames = encoder.encode([b"a" * 100, b"b" * 100, b"c" * 100])
    assert decoder.feed(frames[0]) == [b"a" * 100]
    assert decoder.skip_to(encoder.next_sequence) == len(frames) - 1
    assert decoder.skip_to(encoder.next_sequence) == 0
    assert decoder.feed(encoder.encode([b"d"])[0]) == [b"d"]
