"""Identities: ``ActrType`` (what a node runs) and ``ActrId`` (who a node is), as frozen values.

Protobuf messages are mutable and unhashable, so identities are attrs values everywhere except at
the wire, where ``to_proto``/``from_proto`` convert them.
"""

from __future__ import annotations

import re
from typing import Final, final

import attrs

from ._proto.actr import types_pb2
from .errors import ConfigError

NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID_RE: Final = re.compile(r"^(?P<m>[^:#@]+):(?P<n>[^:#@]+)#(?P<s>\d+)@(?P<r>[^:#@]+)$")


def check_name(kind: str, value: str) -> None:
    """Validate a realm, manufacturer or type name (1-64 of ``[A-Za-z0-9_.-]``).

    Raises:
        ConfigError: naming ``kind`` and the bad value.
    """
    if not NAME_RE.fullmatch(value):  # match() with "$" would accept a trailing newline
        raise ConfigError(f"{kind}={value!r} must be 1-64 characters of [A-Za-z0-9_.-]")


@final
@attrs.frozen(order=True, cache_hash=True)  # hashed per envelope (lookups by peer): once
class ActrType:
    """The kind of workload a node hosts, e.g. ``ActrType("acme", "echo")``."""

    manufacturer: str
    name: str

    def __attrs_post_init__(self) -> None:
        check_name("manufacturer", self.manufacturer)
        check_name("name", self.name)

    def __str__(self) -> str:
        return f"{self.manufacturer}:{self.name}"

    def to_proto(self) -> types_pb2.ActrType:
        return types_pb2.ActrType(manufacturer=self.manufacturer, name=self.name)

    @classmethod
    def from_proto(cls, msg: types_pb2.ActrType) -> ActrType:
        return cls(msg.manufacturer, msg.name)


@final
@attrs.frozen(order=True, cache_hash=True)  # hashed per envelope (lookups by peer): once
class ActrId:
    """A node's identity: realm, serial number assigned by signaling, and workload type.

    ``str(actr_id)`` is ``manufacturer:name#serial@realm``; :meth:`parse` reads it back.
    """

    realm: str
    serial: int
    type: ActrType

    def __attrs_post_init__(self) -> None:
        check_name("realm", self.realm)
        if self.serial < 0:
            raise ConfigError(f"serial={self.serial!r} must be >= 0")

    def __str__(self) -> str:
        return f"{self.type}#{self.serial}@{self.realm}"

    @classmethod
    def parse(cls, text: str) -> ActrId:
        """Parse ``manufacturer:name#serial@realm``.

        Raises:
            ConfigError: ``text`` is not in that form.
        """
        m = _ID_RE.match(text)
        if m is None:
            raise ConfigError(f"{text!r} is not an ActrId (manufacturer:name#serial@realm)")
        return cls(m["r"], int(m["s"]), ActrType(m["m"], m["n"]))

    def to_proto(self) -> types_pb2.ActrId:
        return types_pb2.ActrId(realm=self.realm, serial=self.serial, type=self.type.to_proto())

    @classmethod
    def from_proto(cls, msg: types_pb2.ActrId) -> ActrId:
        """Build from the wire form. Raises ConfigError when a field is invalid."""
        return cls(msg.realm, msg.serial, ActrType.from_proto(msg.type))
