from google.protobuf import descriptor_pb2 as _descriptor_pb2
from actr_trio._proto.actr import wire_pb2 as _wire_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
LANE_FIELD_NUMBER: _ClassVar[int]
lane: _descriptor.FieldDescriptor
PRIORITY_FIELD_NUMBER: _ClassVar[int]
priority: _descriptor.FieldDescriptor
