"""`actr-trio codegen`: protobuf classes plus, per service, a handler base and a client stub."""

from ._protoc import BUILTIN_PACKAGE_MAP, builtin_proto_root, run_protoc

__all__ = ["BUILTIN_PACKAGE_MAP", "builtin_proto_root", "run_protoc"]
