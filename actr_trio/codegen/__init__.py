"""`actr-trio codegen`: protobuf classes plus, per service, a handler base and a client stub.

* :func:`generate` is the library form of ``actr-trio codegen PROTO... -I DIR -o OUT``;
* :func:`generate_builtin` regenerates ``actr_trio/_proto`` from ``protos/actr/*.proto``;
* :class:`Caller` is what generated clients call through (a ``Context`` or an ``ActrRef``).

Importing this package does not import grpcio-tools; generating does.
"""

from ._generator import Generated as Generated
from ._generator import generate as generate
from ._generator import generate_builtin as generate_builtin
from ._protoc import BUILTIN_PACKAGE_MAP as BUILTIN_PACKAGE_MAP
from ._protoc import builtin_proto_root as builtin_proto_root
from ._support import Caller as Caller

__all__ = [
    "BUILTIN_PACKAGE_MAP",
    "Caller",
    "Generated",
    "builtin_proto_root",
    "generate",
    "generate_builtin",
]
