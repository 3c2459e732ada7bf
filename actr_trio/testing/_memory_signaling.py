"""An in-process signaling service for ``LocalRealm``: ids, presence, discovery, relays.

Same contract as the WebSocket client (``SignalingConnector``/``SignalingSession``), without a
socket: registration is a dictionary entry, relays go straight into the target's channel.
"""

from __future__ import annotations

import itertools
from typing import Final

import trio

from .._ids import ActrId, ActrType
from ..errors import PeerUnavailable, SignalingError
from ..transport._abc import Relay, SignalingSession

# Relays are a handful per link (offer, answer); a full buffer means a stuck peer.
RELAY_BUFFER: Final = 64


class MemorySignaling:
    """The service: one per realm name space (LocalRealm owns one)."""

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._serials = itertools.count(1)
        self._sessions: dict[ActrId, MemorySession] = {}

    def connector(self) -> MemoryConnector:
        """A connector for one node (pass it where a ``SignalingConnector`` is expected)."""
        return MemoryConnector(self)

    def present(self) -> list[ActrId]:
        """Everyone registered now, sorted."""
        return sorted(self._sessions)

    def _register(self, actr_type: ActrType, previous_id: ActrId | None) -> MemorySession:
        if previous_id is not None and previous_id.realm == self.realm:
            actr_id = previous_id
            stale = self._sessions.pop(actr_id, None)
            if stale is not None:
                stale._close()
        else:
            actr_id = ActrId(self.realm, next(self._serials), actr_type)
        session = MemorySession(self, actr_id)
        self._sessions[actr_id] = session
        return session

    def _unregister(self, session: MemorySession) -> None:
        if self._sessions.get(session.actr_id) is session:
            del self._sessions[session.actr_id]
        session._close()


class MemorySession:
    """One registered node's session (implements ``SignalingSession``)."""

    def __init__(self, service: MemorySignaling, actr_id: ActrId) -> None:
        self._service = service
        self._actr_id = actr_id
        self._relay_send, self._relay_recv = trio.open_memory_channel[Relay](RELAY_BUFFER)

    def __repr__(self) -> str:
        return f"<MemorySession {self._actr_id}>"

    @property
    def actr_id(self) -> ActrId:
        return self._actr_id

    @property
    def relays(self) -> trio.MemoryReceiveChannel[Relay]:
        return self._relay_recv

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        await trio.lowlevel.checkpoint()
        return [i for i in self._service.present() if i.type == actr_type]

    async def send_relay(self, target: ActrId, kind: str, payload: str) -> None:
        await trio.lowlevel.checkpoint()
        peer = self._service._sessions.get(target)
        if peer is None:
            raise PeerUnavailable(f"{target} is not registered in realm {self._service.realm!r}")
        try:
            peer._relay_send.send_nowait(Relay(self._actr_id, target, kind, payload))
        except trio.WouldBlock:
            raise SignalingError(f"relay queue of {target} is full") from None
        except trio.ClosedResourceError:
            raise PeerUnavailable(f"{target} left") from None

    def _close(self) -> None:
        self._relay_send.close()


class MemoryConnector:
    """Registers one node with a :class:`MemorySignaling` for as long as ``run`` runs."""

    def __init__(self, service: MemorySignaling) -> None:
        self._service = service

    async def run(
        self,
        actr_type: ActrType,
        previous_id: ActrId | None,
        *,
        task_status: trio.TaskStatus[SignalingSession] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        session = self._service._register(actr_type, previous_id)
        try:
            task_status.started(session)
            await trio.sleep_forever()
        finally:
            self._service._unregister(session)
