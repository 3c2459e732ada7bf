"""What :class:`~._server_protocol.ServerProtocol` asks its Trio shell to do: its effects."""

from __future__ import annotations

import attrs

from .._ids import ActrId
from ._protocol import Frame


@attrs.frozen
class Send:
    """Send ``frame`` on connection ``conn`` (after whatever is already queued for it)."""

    conn: int
    frame: Frame


@attrs.frozen
class Close:
    """Close connection ``conn`` once the frames queued before this effect were sent."""

    conn: int
    reason: str


@attrs.frozen
class Forward:
    """Queue ``frame`` (a relay from connection ``origin``) for connection ``conn``, within the
    share of its outbox that relays may fill; then answer ``origin``'s request ``request_id``
    with ``Relayed``, or with ``Error("overloaded")`` if it did not fit."""

    conn: int
    frame: Frame
    origin: int
    request_id: int


@attrs.frozen
class PersistRegistration:
    """Record that ``actr_id`` registered with ``public_key`` (bound to it for good), and that
    its realm's serials are taken up to it."""

    actr_id: ActrId
    public_key: bytes


@attrs.frozen
class LookupBinding:
    """Find the public key ``actr_id`` is bound to in the database, then call
    :meth:`ServerProtocol.binding_found` for ``conn`` with it."""

    conn: int
    actr_id: ActrId


@attrs.frozen
class PersistDeparture:
    """Record that ``actr_id`` left (unregistered, disconnected or timed out)."""

    actr_id: ActrId


ServerEffect = Send | Forward | Close | PersistRegistration | PersistDeparture | LookupBinding
