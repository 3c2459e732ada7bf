from actr_trio._proto.actr import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    LOW: _ClassVar[Priority]
    NORMAL: _ClassVar[Priority]
    HIGH: _ClassVar[Priority]

class Lane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANE_UNSPECIFIED: _ClassVar[Lane]
    SIGNAL: _ClassVar[Lane]
    RELIABLE: _ClassVar[Lane]
    LATENCY_FIRST: _ClassVar[Lane]
    MEDIA_TRACK: _ClassVar[Lane]

class EnvelopeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[EnvelopeKind]
    REQUEST: _ClassVar[EnvelopeKind]
    TELL: _ClassVar[EnvelopeKind]
    RESPONSE: _ClassVar[EnvelopeKind]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_UNSPECIFIED: _ClassVar[ErrorKind]
    HANDLER_FAILED: _ClassVar[ErrorKind]
    ROUTE_NOT_FOUND: _ClassVar[ErrorKind]
    DEADLINE_EXCEEDED: _ClassVar[ErrorKind]
    SHUTTING_DOWN: _ClassVar[ErrorKind]
    MALFORMED: _ClassVar[ErrorKind]
    TOO_LARGE: _ClassVar[ErrorKind]
    WRONG_TARGET: _ClassVar[ErrorKind]
    OVERLOADED: _ClassVar[ErrorKind]
    DEAD_LETTER: _ClassVar[ErrorKind]
    PERMISSION_DENIED: _ClassVar[ErrorKind]
PRIORITY_UNSPECIFIED: Priority
LOW: Priority
NORMAL: Priority
HIGH: Priority
LANE_UNSPECIFIED: Lane
SIGNAL: Lane
RELIABLE: Lane
LATENCY_FIRST: Lane
MEDIA_TRACK: Lane
KIND_UNSPECIFIED: EnvelopeKind
REQUEST: EnvelopeKind
TELL: EnvelopeKind
RESPONSE: EnvelopeKind
ERROR_UNSPECIFIED: ErrorKind
HANDLER_FAILED: ErrorKind
ROUTE_NOT_FOUND: ErrorKind
DEADLINE_EXCEEDED: ErrorKind
SHUTTING_DOWN: ErrorKind
MALFORMED: ErrorKind
TOO_LARGE: ErrorKind
WRONG_TARGET: ErrorKind
OVERLOADED: ErrorKind
DEAD_LETTER: ErrorKind
PERMISSION_DENIED: ErrorKind

class ErrorPayload(_message.Message):
    __slots__ = ("kind", "code", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    code: str
    message: str
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RpcEnvelope(_message.Message):
    __slots__ = ("kind", "route_key", "payload", "request_id", "traceparent", "caller", "target", "priority", "lane", "deadline_ms", "error", "tracestate")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUTE_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LANE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    kind: EnvelopeKind
    route_key: str
    payload: bytes
    request_id: str
    traceparent: str
    caller: _types_pb2.ActrId
    target: _types_pb2.ActrId
    priority: Priority
    lane: Lane
    deadline_ms: int
    error: ErrorPayload
    tracestate: str
    def __init__(self, kind: _Optional[_Union[EnvelopeKind, str]] = ..., route_key: _Optional[str] = ..., payload: _Optional[bytes] = ..., request_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., caller: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., target: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., lane: _Optional[_Union[Lane, str]] = ..., deadline_ms: _Optional[int] = ..., error: _Optional[_Union[ErrorPayload, _Mapping]] = ..., tracestate: _Optional[str] = ...) -> None: ...

class StreamChunk(_message.Message):
    __slots__ = ("stream_id", "sequence", "payload", "end", "instance")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    sequence: int
    payload: bytes
    end: bool
    instance: int
    def __init__(self, stream_id: _Optional[str] = ..., sequence: _Optional[int] = ..., payload: _Optional[bytes] = ..., end: _Optional[bool] = ..., instance: _Optional[int] = ...) -> None: ...

class MediaFrame(_message.Message):
    __slots__ = ("track_id", "sequence", "pts", "width", "height", "kind")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    sequence: int
    pts: int
    width: int
    height: int
    kind: str
    def __init__(self, track_id: _Optional[str] = ..., sequence: _Optional[int] = ..., pts: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., kind: _Optional[str] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("seq", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    error: ErrorPayload
    def __init__(self, seq: _Optional[int] = ..., error: _Optional[_Union[ErrorPayload, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("epoch", "cumulative", "reset", "refused")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    cumulative: int
    reset: bool
    refused: _containers.RepeatedCompositeFieldContainer[Refusal]
    def __init__(self, epoch: _Optional[int] = ..., cumulative: _Optional[int] = ..., reset: _Optional[bool] = ..., refused: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("answers_pending",)
    ANSWERS_PENDING_FIELD_NUMBER: _ClassVar[int]
    answers_pending: bool
    def __init__(self, answers_pending: _Optional[bool] = ...) -> None: ...

class Packet(_message.Message):
    __slots__ = ("epoch", "seq", "envelope", "chunk", "ack", "rejected", "goodbye", "piggyback")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    PIGGYBACK_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    envelope: RpcEnvelope
    chunk: StreamChunk
    ack: Ack
    rejected: ErrorPayload
    goodbye: Goodbye
    piggyback: Ack
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ..., envelope: _Optional[_Union[RpcEnvelope, _Mapping]] = ..., chunk: _Optional[_Union[StreamChunk, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., rejected: _Optional[_Union[ErrorPayload, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., piggyback: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...
