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
