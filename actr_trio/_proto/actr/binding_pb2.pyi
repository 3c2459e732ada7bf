from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SignedDescription(_message.Message):
    __slots__ = ("sdp", "credential", "signature")
    SDP_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sdp: str
    credential: bytes
    signature: bytes
    def __init__(self, sdp: _Optional[str] = ..., credential: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
