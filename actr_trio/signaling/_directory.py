"""Who holds which ``ActrId`` on a signaling server, indexed for discovery pages.

Invariants: one ``ActrId`` has at most one holder (Rule 3 of ``_protocol.py``); the members of
each (realm, type) are kept sorted by serial, so a discovery page (members after a cursor
serial) costs what the page holds, not what the realm holds; an empty (realm, type) is dropped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import final

from .._ids import ActrId, ActrType


def _serial(actr_id: ActrId) -> int:
    return actr_id.serial


@final
class Directory:
    """``ActrId`` -> holding connection, with the members of each (realm, type) by serial."""

    def __init__(self) -> None:
        self._holders: dict[ActrId, int] = {}
        self._members: dict[tuple[str, ActrType], list[ActrId]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, actr_id: ActrId) -> int | None:
        """The connection holding ``actr_id``, if any."""
        return self._holders.get(actr_id)

    def hold(self, actr_id: ActrId, conn: int) -> None:
        """``conn`` holds ``actr_id`` (replacing any previous holder)."""
        if actr_id not in self._holders:
            members = self._members.setdefault((actr_id.realm, actr_id.type), [])
            bisect.insort(members, actr_id, key=_serial)
        self._holders[actr_id] = conn

    def release(self, actr_id: ActrId) -> None:
        """Nobody holds ``actr_id`` any more."""
        if self._holders.pop(actr_id, None) is None:
            return
        key = (actr_id.realm, actr_id.type)
        members = self._members[key]
        index = bisect.bisect_left(members, actr_id.serial, key=_serial)
        del members[index]
        if not members:
            del self._members[key]

    def members(self, realm: str, actr_type: ActrType, after: int) -> Iterator[tuple[ActrId, int]]:
        """Holders of ``actr_type`` ids in ``realm`` with a serial above ``after``, by serial,
        with their connections. Do not change the directory while iterating."""
        members = self._members.get((realm, actr_type), [])
        start = bisect.bisect_right(members, after, key=_serial)
        for index in range(start, len(members)):
            actr_id = members[index]
            yield actr_id, self._holders[actr_id]

    def realm_members(self, realm: str) -> Iterator[tuple[ActrId, int]]:
        """Every holder of an id in ``realm``, by type and serial, with its connection. Do
        not change the directory while iterating."""
        for key in sorted(k for k in self._members if k[0] == realm):
            for actr_id in self._members[key]:
                yield actr_id, self._holders[actr_id]

    def realm_names(self) -> list[str]:
        """Realms with at least one holder, sorted."""
        return sorted({realm for realm, _ in self._members})

    def counts(self) -> dict[tuple[str, ActrType], int]:
        """Holders per (realm, type), for the server's metrics."""
        return {key: len(members) for key, members in self._members.items()}

    def realms(self) -> int:
        """Realms with at least one holder."""
        return len({realm for realm, _ in self._members})
