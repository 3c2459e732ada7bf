"""Sans-IO codec for packets and envelopes: bytes in, typed values or typed errors out.

Invariants:

* Sizes are checked before anything is parsed (protobuf has no size limit of its own).
* Any decoding failure becomes :class:`~actr_trio.errors.MalformedEnvelope` or
  :class:`~actr_trio.errors.EnvelopeTooLarge`; no protobuf exception escapes this module.
* Protobuf messages never leave it: callers get :class:`Envelope`, :class:`Chunk` and
  :class:`AckInfo`, plain slotted objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs
from google.protobuf.message import DecodeError

from ._ids import ActrId, ActrType
from ._lanes import LANE_OF, PRIORITY_OF, Lane, Priority
from ._proto.actr import types_pb2, wire_pb2
from ._tracing import checked_traceparent, checked_tracestate
from .errors import ActrError, CallError, EnvelopeTooLarge, MalformedEnvelope, error_from_wire

REQUEST: Final = wire_pb2.REQUEST
TELL: Final = wire_pb2.TELL
RESPONSE: Final = wire_pb2.RESPONSE

# Bytes a packet may carry beyond its payload (ids, route key, headers). Generous: the point is
# to refuse a 50 MB "envelope" before parsing it, not to count header bytes exactly.
PACKET_OVERHEAD: Final = 16 * 1024

# ActrId construction validates with a regex; packets repeat the same few ids, so remember them.
_ID_CACHE_LIMIT: Final = 4096
_id_cache: dict[tuple[str, int, str, str], ActrId] = {}
_field_cache: dict[tuple[bytes, ActrId], bytes] = {}


@attrs.frozen
class WireError:
    """An error as it travels: ``ErrorKind`` value, application code, message."""

    kind: int
    code: str
    message: str

    @classmethod
    def of(cls, exc: CallError) -> WireError:
        return cls(exc.wire_kind, exc.code, exc.message)

    def to_exception(self) -> CallError:
        return error_from_wire(self.kind, self.code, self.message)

    def to_proto(self) -> wire_pb2.ErrorPayload:
        return wire_pb2.ErrorPayload(kind=self.kind, code=self.code, message=self.message)  # type: ignore[arg-type]


@attrs.define(slots=True)
class Envelope:
    """A decoded ``RpcEnvelope`` (see protos/actr/wire.proto)."""

    kind: int
    route_key: str
    payload: bytes
    request_id: str
    #: W3C trace context of the span that sent it (``""``: none); see ``_tracing.py``.
    traceparent: str
    caller: ActrId | None
    target: ActrId | None
    priority: Priority
    lane: Lane
    deadline_ms: int
    error: WireError | None = None
    tracestate: str = ""


@final
@attrs.define(slots=True)
class Chunk:
    """A decoded ``StreamChunk``."""

    stream_id: str
    sequence: int
    payload: bytes
    end: bool
    instance: int = 0  # the sender's opening of the stream; a newer one restarts the sequence


@attrs.define(slots=True)
class AckInfo:
    """A decoded link acknowledgement."""

    epoch: int
    cumulative: int
    reset: bool
    refused: dict[int, WireError]


@final
@attrs.frozen
class Goodbye:
    """A decoded ``Goodbye``: the peer that sent it is shutting down gracefully.

    It names nobody: it is about the peer whose link it arrived on.
    """

    answers_pending: bool


@attrs.define(slots=True)
class InvalidEnvelope:
    """A sequenced packet whose envelope is unacceptable: refuse it, naming ``error``."""

    error: CallError
    request_id: str


@attrs.define(slots=True)
class Packet:
    """One decoded packet.

    ``body`` is an Envelope, a Chunk, an AckInfo, a WireError (the peer rejected something we
    sent), an InvalidEnvelope (a sequenced envelope we must refuse) or a Goodbye.
    """

    epoch: int
    seq: int
    body: Envelope | Chunk | AckInfo | WireError | InvalidEnvelope | Goodbye
    envelope_bytes: bytes = b""  # the RpcEnvelope's own encoding, stored in the mailbox
    #: An acknowledgement riding on this packet (``Packet.piggyback``), for our link on its lane.
    piggyback: AckInfo | None = None


def actr_id_from_proto(msg: types_pb2.ActrId) -> ActrId:
    """``ActrId.from_proto`` with a cache; raises MalformedEnvelope on invalid fields."""
    key = (msg.realm, msg.serial, msg.type.manufacturer, msg.type.name)
    found = _id_cache.get(key)
    if found is None:
        try:
            found = ActrId(msg.realm, msg.serial, ActrType(msg.type.manufacturer, msg.type.name))
        except ActrError as exc:
            raise MalformedEnvelope(f"invalid ActrId: {exc}") from exc
        if len(_id_cache) >= _ID_CACHE_LIMIT:
            _id_cache.clear()
        _id_cache[key] = found
    return found


def _id_field(tag: bytes, actr_id: ActrId) -> bytes:
    """``actr_id`` as an encoded ``ActrId`` field (tag, length, body), remembered: the same few
    ids are in every envelope, and building their protobuf messages each time was most of
    the encoding's cost."""
    key = (tag, actr_id)
    found = _field_cache.get(key)
    if found is None:
        body = actr_id.to_proto().SerializeToString()
        found = tag + _varint(len(body)) + body
        if len(_field_cache) >= _ID_CACHE_LIMIT:
            _field_cache.clear()
        _field_cache[key] = found
    return found


def encode_envelope(env: Envelope) -> bytes:
    """Serialize an :class:`Envelope` to ``RpcEnvelope`` bytes."""
    msg = wire_pb2.RpcEnvelope(
        kind=env.kind,  # type: ignore[arg-type]
        route_key=env.route_key,
        payload=env.payload,
        request_id=env.request_id,
        traceparent=env.traceparent,
        priority=int(env.priority),  # type: ignore[arg-type]
        lane=int(env.lane),  # type: ignore[arg-type]
        deadline_ms=env.deadline_ms,
        tracestate=env.tracestate,
    )
    if env.error is not None:
        msg.error.CopyFrom(env.error.to_proto())
    data = msg.SerializeToString()
    # Serialized protobuf fields concatenate: the ids are appended as encoded fields.
    if env.caller is not None:
        data += _id_field(_CALLER_TAG, env.caller)
    if env.target is not None:
        data += _id_field(_TARGET_TAG, env.target)
    return data


def encode_response(request_id: str, payload: bytes, error: WireError | None) -> bytes:
    """A RESPONSE envelope with only what its caller reads (request id, payload or error).

    The in-process route stores this as a request's answer for the dedupe window (a retry
    gets it back, in process or over the wire): a tenth of a full envelope's encoding cost.
    """
    if error is not None:
        msg = wire_pb2.RpcEnvelope(kind=RESPONSE, request_id=request_id, error=error.to_proto())
        return msg.SerializeToString()
    rid = request_id.encode()
    return b"".join(
        (_RESPONSE_HEAD, _varint(len(payload)), payload, _REQUEST_ID_TAG, _varint(len(rid)), rid)
    )


def decode_envelope(data: bytes, *, max_payload: int) -> Envelope:
    """Parse ``RpcEnvelope`` bytes (from the wire or the mailbox).

    Raises:
        EnvelopeTooLarge: ``data`` or its payload exceeds ``max_payload``.
        MalformedEnvelope: not a valid envelope.
    """
    if len(data) > max_payload + PACKET_OVERHEAD:
        raise EnvelopeTooLarge(f"envelope of {len(data)} bytes exceeds max_payload={max_payload}")
    msg = wire_pb2.RpcEnvelope()
    try:
        msg.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise MalformedEnvelope(f"undecodable envelope: {exc}") from exc
    return _envelope_from_proto(msg, max_payload)


def _envelope_from_proto(msg: wire_pb2.RpcEnvelope, max_payload: int) -> Envelope:
    if len(msg.payload) > max_payload:
        raise EnvelopeTooLarge(
            f"payload of {len(msg.payload)} bytes exceeds max_payload={max_payload}"
        )
    if msg.kind not in (REQUEST, TELL, RESPONSE):
        raise MalformedEnvelope(f"unknown envelope kind {msg.kind}")
    priority = PRIORITY_OF.get(msg.priority or Priority.NORMAL)
    lane = LANE_OF.get(msg.lane or Lane.RELIABLE)
    if priority is None or lane is None:
        raise MalformedEnvelope(f"unknown priority {msg.priority} or lane {msg.lane}")
    error = None
    if msg.HasField("error"):
        error = WireError(msg.error.kind, msg.error.code, msg.error.message)
    # Trace context is advice: a malformed one (or a bare trace id, as field 5 once held) is
    # dropped and the envelope is handled as the start of a trace.
    traceparent = checked_traceparent(msg.traceparent) if msg.traceparent else ""
    tracestate = checked_tracestate(msg.tracestate) if traceparent and msg.tracestate else ""
    return Envelope(
        kind=msg.kind,
        route_key=msg.route_key,
        payload=msg.payload,
        request_id=msg.request_id,
        traceparent=traceparent,
        caller=actr_id_from_proto(msg.caller) if msg.HasField("caller") else None,
        target=actr_id_from_proto(msg.target) if msg.HasField("target") else None,
        priority=priority,
        lane=lane,
        deadline_ms=msg.deadline_ms,
        error=error,
        tracestate=tracestate,
    )


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]  # lengths of ids and small payloads: most varints here
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(0x80))
# Field 10 (envelope), wire type 2 (length-delimited): (10 << 3) | 2.
_ENVELOPE_TAG: Final = _varint((10 << 3) | 2)
# Field 11 (chunk), wire type 2.
_CHUNK_TAG: Final = _varint((11 << 3) | 2)
# Packet field 15 (piggyback, an Ack), wire type 2.
_PIGGYBACK_TAG: Final = _varint((15 << 3) | 2)
# RpcEnvelope fields 6 (caller) and 7 (target), wire type 2.
_CALLER_TAG: Final = _varint((6 << 3) | 2)
_TARGET_TAG: Final = _varint((7 << 3) | 2)
# RpcEnvelope: field 1 (kind, varint) = RESPONSE, then the tag of field 3 (payload, bytes).
_RESPONSE_HEAD: Final = _varint(1 << 3) + _varint(RESPONSE) + _varint((3 << 3) | 2)
# RpcEnvelope field 4 (request_id), wire type 2.
_REQUEST_ID_TAG: Final = _varint((4 << 3) | 2)


def encode_sequenced(epoch: int, seq: int, body: bytes, *, chunk: bool = False) -> bytes:
    """A ``Packet`` carrying already-encoded envelope bytes (or ``StreamChunk`` bytes when
    ``chunk``), without re-encoding them.

    Serialized protobuf fields concatenate, so the header and the body field are joined.
    """
    header = wire_pb2.Packet(epoch=epoch, seq=seq).SerializeToString()
    return header + (_CHUNK_TAG if chunk else _ENVELOPE_TAG) + _varint(len(body)) + body


def encode_chunk_body(chunk: Chunk) -> bytes:
    """A ``StreamChunk``'s own encoding (what :func:`encode_sequenced` wraps on a reliable lane)."""
    return wire_pb2.StreamChunk(
        stream_id=chunk.stream_id,
        sequence=chunk.sequence,
        payload=chunk.payload,
        end=chunk.end,
        instance=chunk.instance,
    ).SerializeToString()


def encode_chunk(chunk: Chunk) -> bytes:
    """A ``Packet`` carrying a stream chunk, unsequenced (LatencyFirst: no link, no ack; the
    stream has its own sequence)."""
    pkt = wire_pb2.Packet()
    pkt.chunk.stream_id = chunk.stream_id
    pkt.chunk.sequence = chunk.sequence
    pkt.chunk.payload = chunk.payload
    pkt.chunk.end = chunk.end
    pkt.chunk.instance = chunk.instance
    return pkt.SerializeToString()


def encode_ack(
    epoch: int,
    cumulative: int,
    *,
    reset: bool = False,
    refused: Sequence[tuple[int, WireError]] = (),
) -> bytes:
    """A ``Packet`` carrying a link acknowledgement."""
    pkt = wire_pb2.Packet()
    pkt.ack.epoch = epoch
    pkt.ack.cumulative = cumulative
    pkt.ack.reset = reset
    for seq, error in refused:
        pkt.ack.refused.add(seq=seq, error=error.to_proto())
    return pkt.SerializeToString()


def encode_piggyback(
    epoch: int, cumulative: int, refused: Sequence[tuple[int, WireError]] = ()
) -> bytes:
    """The ``Packet.piggyback`` field carrying an acknowledgement, to append to any encoded
    ``Packet`` (serialized protobuf fields concatenate: nothing is re-encoded)."""
    ack = wire_pb2.Ack(epoch=epoch, cumulative=cumulative)
    for seq, error in refused:
        ack.refused.add(seq=seq, error=error.to_proto())
    body = ack.SerializeToString()
    return _PIGGYBACK_TAG + _varint(len(body)) + body


def _ack_info(a: wire_pb2.Ack) -> AckInfo:
    refused = {r.seq: WireError(r.error.kind, r.error.code, r.error.message) for r in a.refused}
    return AckInfo(a.epoch, a.cumulative, a.reset, refused)


def encode_rejection(error: WireError) -> bytes:
    """A ``Packet`` telling a peer that something it sent could not be decoded."""
    pkt = wire_pb2.Packet()
    pkt.rejected.CopyFrom(error.to_proto())
    return pkt.SerializeToString()


def encode_goodbye(goodbye: Goodbye) -> bytes:
    """A ``Packet`` saying goodbye (unsequenced)."""
    pkt = wire_pb2.Packet()
    pkt.goodbye.answers_pending = goodbye.answers_pending
    return pkt.SerializeToString()


def decode_packet(data: bytes, *, max_payload: int) -> Packet:
    """Parse one ``Packet``.

    Raises:
        EnvelopeTooLarge: over ``max_payload`` (checked before parsing).
        MalformedEnvelope: anything else wrong with it.
    """
    if len(data) > max_payload + PACKET_OVERHEAD:
        raise EnvelopeTooLarge(f"packet of {len(data)} bytes exceeds max_payload={max_payload}")
    pkt = wire_pb2.Packet()
    try:
        pkt.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise MalformedEnvelope(f"undecodable packet: {exc}") from exc
    decoded = _packet_body(pkt, max_payload)
    if pkt.HasField("piggyback"):
        if pkt.piggyback.reset:
            # A reset names an epoch the receiver does not know: only ever a packet of its own.
            raise MalformedEnvelope("a piggybacked ack cannot ask for a reset")
        decoded.piggyback = _ack_info(pkt.piggyback)
    return decoded


def _packet_body(pkt: wire_pb2.Packet, max_payload: int) -> Packet:
    which = pkt.WhichOneof("body")
    if which == "envelope":
        try:
            env = _envelope_from_proto(pkt.envelope, max_payload)
        except CallError as exc:
            return Packet(pkt.epoch, pkt.seq, InvalidEnvelope(exc, pkt.envelope.request_id))
        return Packet(pkt.epoch, pkt.seq, env, pkt.envelope.SerializeToString())
    if which == "chunk":
        c = pkt.chunk
        if len(c.payload) > max_payload:
            raise EnvelopeTooLarge(
                f"chunk of {len(c.payload)} bytes exceeds max_payload={max_payload}"
            )
        # seq 0: unsequenced (LatencyFirst); otherwise it rides the reliable link like an envelope.
        return Packet(
            pkt.epoch, pkt.seq, Chunk(c.stream_id, c.sequence, c.payload, c.end, c.instance)
        )
    if which == "ack":
        return Packet(0, 0, _ack_info(pkt.ack))
    if which == "rejected":
        r = pkt.rejected
        return Packet(0, 0, WireError(r.kind, r.code, r.message))
    if which == "goodbye":
        # Control, not data: a goodbye inside the link's numbering would be acked and resent.
        if pkt.epoch or pkt.seq:
            raise MalformedEnvelope("a goodbye is unsequenced (epoch and seq must be 0)")
        return Packet(0, 0, Goodbye(pkt.goodbye.answers_pending))
    raise MalformedEnvelope("packet has no body")
