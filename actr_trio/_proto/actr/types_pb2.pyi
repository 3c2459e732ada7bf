from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActrType(_message.Message):
    __slots__ = ("manufacturer", "name")
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    manufacturer: str
    name: str
    def __init__(self, manufacturer: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ActrId(_message.Message):
    __slots__ = ("realm", "serial", "type")
    REALM_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    realm: str
    serial: int
    type: ActrType
    def __init__(self, realm: _Optional[str] = ..., serial: _Optional[int] = ..., type: _Optional[_Union[ActrType, _Mapping]] = ...) -> None: ...

class CredentialClaims(_message.Message):
    __slots__ = ("actr_id", "public_key", "realm", "issued_at", "expires_at", "issuer_key_id")
    ACTR_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    actr_id: ActrId
    public_key: bytes
    realm: str
    issued_at: int
    expires_at: int
    issuer_key_id: str
    def __init__(self, actr_id: _Optional[_Union[ActrId, _Mapping]] = ..., public_key: _Optional[bytes] = ..., realm: _Optional[str] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., issuer_key_id: _Optional[str] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("claims", "signature")
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    claims: bytes
    signature: bytes
    def __init__(self, claims: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
