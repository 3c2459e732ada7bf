"""Hypothesis: whatever bytes a peer sends, the packet codec returns a value or raises one of
our typed errors (MalformedEnvelope / EnvelopeTooLarge), never anything else."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actr_trio import ActrId, ActrType, Lane, Priority
from actr_trio._envelope import (
    REQUEST,
    Envelope,
    InvalidEnvelope,
    decode_envelope,
    decode_packet,
    encode_envelope,
    encode_sequenced,
)
from actr_trio.errors import EnvelopeTooLarge, MalformedEnvelope

MAX = 4096
ID = ActrId("r", 1, ActrType("m", "n"))


def valid_packet(payload: bytes) -> bytes:
    env = Envelope(REQUEST, "a.B.C", payload, "rid", "", ID, ID, Priority.NORMAL, Lane.RELIABLE, 0)
    return encode_sequenced(7, 1, encode_envelope(env))


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=MAX + 100))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedEnvelope, EnvelopeTooLarge):
        decode_packet(data, max_payload=MAX)
    with contextlib.suppress(MalformedEnvelope, EnvelopeTooLarge):
        decode_envelope(data, max_payload=MAX)


@settings(max_examples=2000)
@given(st.binary(max_size=200), st.data())
def test_mutated_and_truncated_packets(payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(valid_packet(payload))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, max(0, len(raw) - 1)), st.integers(0, 255)), max_size=4)
    )
    for index, value in flips:
        if index < len(raw):
            raw[index] = value
    try:
        pkt = decode_packet(bytes(raw[:cut]), max_payload=MAX)
    except (MalformedEnvelope, EnvelopeTooLarge):
        return
    assert isinstance(pkt.body, Envelope | InvalidEnvelope) or pkt.seq == 0


def test_oversized_payload_becomes_a_refusal_with_its_seq() -> None:
    # Slightly over: the packet parses, so the refusal can name the sequence number.
    pkt = decode_packet(valid_packet(b"x" * (MAX + 1)), max_payload=MAX)
    assert pkt.seq == 1
    assert isinstance(pkt.body, InvalidEnvelope)
    assert isinstance(pkt.body.error, EnvelopeTooLarge)


def test_far_oversized_packet_is_refused_before_parsing() -> None:
    try:
        decode_packet(b"\x00" * (MAX * 10), max_payload=MAX)
    except EnvelopeTooLarge:
        return
    raise AssertionError("a packet far over max_payload was parsed")
