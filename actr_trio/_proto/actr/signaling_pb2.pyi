from actr_trio._proto.actr import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalingFrame(_message.Message):
    __slots__ = ("hello", "challenge", "authenticate", "register", "registered", "discover", "peers", "relay", "relayed", "heartbeat", "heartbeat_ack", "unregister", "error", "inspect", "inspection")
    class RelayKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RELAY_KIND_UNSPECIFIED: _ClassVar[SignalingFrame.RelayKind]
        OFFER: _ClassVar[SignalingFrame.RelayKind]
        ANSWER: _ClassVar[SignalingFrame.RelayKind]
        ICE: _ClassVar[SignalingFrame.RelayKind]
        REFUSE: _ClassVar[SignalingFrame.RelayKind]
    RELAY_KIND_UNSPECIFIED: SignalingFrame.RelayKind
    OFFER: SignalingFrame.RelayKind
    ANSWER: SignalingFrame.RelayKind
    ICE: SignalingFrame.RelayKind
    REFUSE: SignalingFrame.RelayKind
    class Hello(_message.Message):
        __slots__ = ("realm", "version")
        REALM_FIELD_NUMBER: _ClassVar[int]
        VERSION_FIELD_NUMBER: _ClassVar[int]
        realm: str
        version: int
        def __init__(self, realm: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
    class Challenge(_message.Message):
        __slots__ = ("nonce", "auth_required")
        NONCE_FIELD_NUMBER: _ClassVar[int]
        AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
        nonce: bytes
        auth_required: bool
        def __init__(self, nonce: _Optional[bytes] = ..., auth_required: _Optional[bool] = ...) -> None: ...
    class Authenticate(_message.Message):
        __slots__ = ("proof",)
        PROOF_FIELD_NUMBER: _ClassVar[int]
        proof: bytes
        def __init__(self, proof: _Optional[bytes] = ...) -> None: ...
    class CallerFilter(_message.Message):
        __slots__ = ("allow", "deny")
        ALLOW_FIELD_NUMBER: _ClassVar[int]
        DENY_FIELD_NUMBER: _ClassVar[int]
        allow: _containers.RepeatedScalarFieldContainer[str]
        deny: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, allow: _Optional[_Iterable[str]] = ..., deny: _Optional[_Iterable[str]] = ...) -> None: ...
    class Register(_message.Message):
        __slots__ = ("actr_type", "previous_id", "visible_to", "public_key", "signature", "listen")
        ACTR_TYPE_FIELD_NUMBER: _ClassVar[int]
        PREVIOUS_ID_FIELD_NUMBER: _ClassVar[int]
        VISIBLE_TO_FIELD_NUMBER: _ClassVar[int]
        PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
        SIGNATURE_FIELD_NUMBER: _ClassVar[int]
        LISTEN_FIELD_NUMBER: _ClassVar[int]
        actr_type: _types_pb2.ActrType
        previous_id: _types_pb2.ActrId
        visible_to: _containers.RepeatedCompositeFieldContainer[SignalingFrame.CallerFilter]
        public_key: bytes
        signature: bytes
        listen: str
        def __init__(self, actr_type: _Optional[_Union[_types_pb2.ActrType, _Mapping]] = ..., previous_id: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., visible_to: _Optional[_Iterable[_Union[SignalingFrame.CallerFilter, _Mapping]]] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., listen: _Optional[str] = ...) -> None: ...
    class Registered(_message.Message):
        __slots__ = ("actr_id", "presence_timeout", "credential", "issuer_key")
        ACTR_ID_FIELD_NUMBER: _ClassVar[int]
        PRESENCE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
        ISSUER_KEY_FIELD_NUMBER: _ClassVar[int]
        actr_id: _types_pb2.ActrId
        presence_timeout: float
        credential: bytes
        issuer_key: bytes
        def __init__(self, actr_id: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., presence_timeout: _Optional[float] = ..., credential: _Optional[bytes] = ..., issuer_key: _Optional[bytes] = ...) -> None: ...
    class Discover(_message.Message):
        __slots__ = ("request_id", "actr_type", "cursor", "page_size")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        ACTR_TYPE_FIELD_NUMBER: _ClassVar[int]
        CURSOR_FIELD_NUMBER: _ClassVar[int]
        PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        actr_type: _types_pb2.ActrType
        cursor: int
        page_size: int
        def __init__(self, request_id: _Optional[int] = ..., actr_type: _Optional[_Union[_types_pb2.ActrType, _Mapping]] = ..., cursor: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...
    class Peers(_message.Message):
        __slots__ = ("request_id", "peers", "next_cursor", "addresses")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        PEERS_FIELD_NUMBER: _ClassVar[int]
        NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
        ADDRESSES_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        peers: _containers.RepeatedCompositeFieldContainer[_types_pb2.ActrId]
        next_cursor: int
        addresses: _containers.RepeatedCompositeFieldContainer[SignalingFrame.PeerAddress]
        def __init__(self, request_id: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[_types_pb2.ActrId, _Mapping]]] = ..., next_cursor: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[SignalingFrame.PeerAddress, _Mapping]]] = ...) -> None: ...
    class PeerAddress(_message.Message):
        __slots__ = ("actr_id", "listen")
        ACTR_ID_FIELD_NUMBER: _ClassVar[int]
        LISTEN_FIELD_NUMBER: _ClassVar[int]
        actr_id: _types_pb2.ActrId
        listen: str
        def __init__(self, actr_id: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., listen: _Optional[str] = ...) -> None: ...
    class RelayMessage(_message.Message):
        __slots__ = ("request_id", "source", "target", "kind", "payload")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        SOURCE_FIELD_NUMBER: _ClassVar[int]
        TARGET_FIELD_NUMBER: _ClassVar[int]
        KIND_FIELD_NUMBER: _ClassVar[int]
        PAYLOAD_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        source: _types_pb2.ActrId
        target: _types_pb2.ActrId
        kind: SignalingFrame.RelayKind
        payload: str
        def __init__(self, request_id: _Optional[int] = ..., source: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., target: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., kind: _Optional[_Union[SignalingFrame.RelayKind, str]] = ..., payload: _Optional[str] = ...) -> None: ...
    class Relayed(_message.Message):
        __slots__ = ("request_id",)
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        def __init__(self, request_id: _Optional[int] = ...) -> None: ...
    class LaneReport(_message.Message):
        __slots__ = ("lane", "peers", "unacked")
        LANE_FIELD_NUMBER: _ClassVar[int]
        PEERS_FIELD_NUMBER: _ClassVar[int]
        UNACKED_FIELD_NUMBER: _ClassVar[int]
        lane: str
        peers: int
        unacked: int
        def __init__(self, lane: _Optional[str] = ..., peers: _Optional[int] = ..., unacked: _Optional[int] = ...) -> None: ...
    class NodeReport(_message.Message):
        __slots__ = ("backlog", "handled", "accepted", "lanes", "dead_letters", "recent_dead_letters")
        BACKLOG_FIELD_NUMBER: _ClassVar[int]
        HANDLED_FIELD_NUMBER: _ClassVar[int]
        ACCEPTED_FIELD_NUMBER: _ClassVar[int]
        LANES_FIELD_NUMBER: _ClassVar[int]
        DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
        RECENT_DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
        backlog: _containers.RepeatedScalarFieldContainer[int]
        handled: int
        accepted: int
        lanes: _containers.RepeatedCompositeFieldContainer[SignalingFrame.LaneReport]
        dead_letters: int
        recent_dead_letters: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, backlog: _Optional[_Iterable[int]] = ..., handled: _Optional[int] = ..., accepted: _Optional[int] = ..., lanes: _Optional[_Iterable[_Union[SignalingFrame.LaneReport, _Mapping]]] = ..., dead_letters: _Optional[int] = ..., recent_dead_letters: _Optional[_Iterable[str]] = ...) -> None: ...
    class Heartbeat(_message.Message):
        __slots__ = ("report",)
        REPORT_FIELD_NUMBER: _ClassVar[int]
        report: SignalingFrame.NodeReport
        def __init__(self, report: _Optional[_Union[SignalingFrame.NodeReport, _Mapping]] = ...) -> None: ...
    class HeartbeatAck(_message.Message):
        __slots__ = ("credential",)
        CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
        credential: bytes
        def __init__(self, credential: _Optional[bytes] = ...) -> None: ...
    class Unregister(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Inspect(_message.Message):
        __slots__ = ("request_id", "cursor")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        CURSOR_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        cursor: int
        def __init__(self, request_id: _Optional[int] = ..., cursor: _Optional[int] = ...) -> None: ...
    class NodeStatus(_message.Message):
        __slots__ = ("actr_id", "since", "heartbeat_age", "report", "handled_rate")
        ACTR_ID_FIELD_NUMBER: _ClassVar[int]
        SINCE_FIELD_NUMBER: _ClassVar[int]
        HEARTBEAT_AGE_FIELD_NUMBER: _ClassVar[int]
        REPORT_FIELD_NUMBER: _ClassVar[int]
        HANDLED_RATE_FIELD_NUMBER: _ClassVar[int]
        actr_id: _types_pb2.ActrId
        since: float
        heartbeat_age: float
        report: SignalingFrame.NodeReport
        handled_rate: float
        def __init__(self, actr_id: _Optional[_Union[_types_pb2.ActrId, _Mapping]] = ..., since: _Optional[float] = ..., heartbeat_age: _Optional[float] = ..., report: _Optional[_Union[SignalingFrame.NodeReport, _Mapping]] = ..., handled_rate: _Optional[float] = ...) -> None: ...
    class Inspection(_message.Message):
        __slots__ = ("request_id", "nodes", "next_cursor")
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        NODES_FIELD_NUMBER: _ClassVar[int]
        NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
        request_id: int
        nodes: _containers.RepeatedCompositeFieldContainer[SignalingFrame.NodeStatus]
        next_cursor: int
        def __init__(self, request_id: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[SignalingFrame.NodeStatus, _Mapping]]] = ..., next_cursor: _Optional[int] = ...) -> None: ...
    class Error(_message.Message):
        __slots__ = ("code", "message", "request_id")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
        code: str
        message: str
        request_id: int
        def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    DISCOVER_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    RELAYED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    UNREGISTER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INSPECT_FIELD_NUMBER: _ClassVar[int]
    INSPECTION_FIELD_NUMBER: _ClassVar[int]
    hello: SignalingFrame.Hello
    challenge: SignalingFrame.Challenge
    authenticate: SignalingFrame.Authenticate
    register: SignalingFrame.Register
    registered: SignalingFrame.Registered
    discover: SignalingFrame.Discover
    peers: SignalingFrame.Peers
    relay: SignalingFrame.RelayMessage
    relayed: SignalingFrame.Relayed
    heartbeat: SignalingFrame.Heartbeat
    heartbeat_ack: SignalingFrame.HeartbeatAck
    unregister: SignalingFrame.Unregister
    error: SignalingFrame.Error
    inspect: SignalingFrame.Inspect
    inspection: SignalingFrame.Inspection
    def __init__(self, hello: _Optional[_Union[SignalingFrame.Hello, _Mapping]] = ..., challenge: _Optional[_Union[SignalingFrame.Challenge, _Mapping]] = ..., authenticate: _Optional[_Union[SignalingFrame.Authenticate, _Mapping]] = ..., register: _Optional[_Union[SignalingFrame.Register, _Mapping]] = ..., registered: _Optional[_Union[SignalingFrame.Registered, _Mapping]] = ..., discover: _Optional[_Union[SignalingFrame.Discover, _Mapping]] = ..., peers: _Optional[_Union[SignalingFrame.Peers, _Mapping]] = ..., relay: _Optional[_Union[SignalingFrame.RelayMessage, _Mapping]] = ..., relayed: _Optional[_Union[SignalingFrame.Relayed, _Mapping]] = ..., heartbeat: _Optional[_Union[SignalingFrame.Heartbeat, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[SignalingFrame.HeartbeatAck, _Mapping]] = ..., unregister: _Optional[_Union[SignalingFrame.Unregister, _Mapping]] = ..., error: _Optional[_Union[SignalingFrame.Error, _Mapping]] = ..., inspect: _Optional[_Union[SignalingFrame.Inspect, _Mapping]] = ..., inspection: _Optional[_Union[SignalingFrame.Inspection, _Mapping]] = ...) -> None: ...
