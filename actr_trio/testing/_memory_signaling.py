"""An in-process signaling service for ``LocalRealm``: ids, presence, discovery, relays.

Same contract as the WebSocket client (``SignalingConnector``/``SignalingSession``), without a
socket: registration is a dictionary entry, relays go straight into the target's channel.

Identity works as at the real server: the service has its own issuer key and issues real
credentials, an ``ActrId`` is bound to the node key that first registered it, and asking for an
id bound to another key raises ``IdentityTaken``. One simplification: a ``previous_id`` the
service never assigned (a node restarted into a new ``LocalRealm``) is granted and bound to the
asking key, where the real server refuses it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import trio

from .._acl import Visibility
from .._identity import IssuerKey, NodeKey
from .._ids import ActrId, ActrType
from ..errors import IdentityTaken, PeerUnavailable, SignalingError
from ..transport._abc import Relay, SignalingSession

# Relays are a handful per link (offer, answer); a full buffer means a stuck peer.
RELAY_BUFFER: Final = 64
#: Default seconds a credential of the in-memory service is valid (as the real server's).
CREDENTIAL_LIFETIME: Final = 3600.0
# A session renews its credential once this fraction of its lifetime has passed.
RENEW_AT: Final = 2 / 3


class MemorySignaling:
    """The service: one per realm name space (LocalRealm owns one).

    Args:
        realm: the realm its nodes register in.
        credential_lifetime: seconds each issued credential is valid.
    """

    def __init__(self, realm: str, *, credential_lifetime: float = CREDENTIAL_LIFETIME) -> None:
        self.realm = realm
        self.issuer = IssuerKey.generate()
        self.credential_lifetime = credential_lifetime
        self._next_serial = 1
        self._sessions: dict[ActrId, MemorySession] = {}
        self._keys: dict[ActrId, bytes] = {}  # every id ever assigned -> its node's public key

    def connector(self, *, visibility: Sequence[Visibility] = ()) -> MemoryConnector:
        """A connector for one node (pass it where a ``SignalingConnector`` is expected);
        ``visibility``: who may discover that node (its ACLs'), as a real server keeps it."""
        return MemoryConnector(self, visibility)

    def present(self) -> list[ActrId]:
        """Everyone registered now, sorted."""
        return sorted(self._sessions)

    def _register(
        self, actr_type: ActrType, previous_id: ActrId | None, node_key: NodeKey
    ) -> MemorySession:
        public = node_key.public_bytes()
        if previous_id is not None and previous_id.realm == self.realm:
            actr_id = previous_id
            bound = self._keys.setdefault(actr_id, public)
            if bound != public:
                raise IdentityTaken(
                    f"{actr_id} is bound to another node key; remove identity.json from the"
                    " data_dir to register under a new ActrId"
                )
            self._next_serial = max(self._next_serial, actr_id.serial + 1)
            stale = self._sessions.pop(actr_id, None)
            if stale is not None:
                stale._close()
        else:
            actr_id = ActrId(self.realm, self._next_serial, actr_type)
            self._next_serial += 1
            self._keys[actr_id] = public
        session = MemorySession(self, actr_id, node_key)
        self._sessions[actr_id] = session
        return session

    def _issue(self, actr_id: ActrId, node_key: NodeKey) -> tuple[bytes, float]:
        """A fresh credential and the wall-clock time to renew it."""
        now = time.time()
        credential = self.issuer.issue(
            actr_id, node_key.public_bytes(), now=now, lifetime=self.credential_lifetime
        )
        return credential, now + self.credential_lifetime * RENEW_AT

    def _unregister(self, session: MemorySession) -> None:
        if self._sessions.get(session.actr_id) is session:
            del self._sessions[session.actr_id]
        session._close()


class MemorySession:
    """One registered node's session (implements ``SignalingSession``)."""

    def __init__(self, service: MemorySignaling, actr_id: ActrId, node_key: NodeKey) -> None:
        self._service = service
        self._actr_id = actr_id
        self._node_key = node_key
        self._credential, self._renew_at = service._issue(actr_id, node_key)
        self.visibility: tuple[Visibility, ...] = ()  # who may discover it; () is everyone
        self.listen: str | None = None  # its advertised direct WebSocket address
        self._relay_send, self._relay_recv = trio.open_memory_channel[Relay](RELAY_BUFFER)

    def __repr__(self) -> str:
        return f"<MemorySession {self._actr_id}>"

    @property
    def actr_id(self) -> ActrId:
        return self._actr_id

    @property
    def node_key(self) -> NodeKey:
        return self._node_key

    @property
    def credential(self) -> bytes:
        # No renewal task: an in-memory issue is instant, so renew when asked past 2/3 of life.
        if time.time() >= self._renew_at:
            self._credential, self._renew_at = self._service._issue(self._actr_id, self._node_key)
        return self._credential

    @property
    def issuer_key(self) -> bytes:
        return self._service.issuer.public_bytes()

    @property
    def relays(self) -> trio.MemoryReceiveChannel[Relay]:
        return self._relay_recv

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        await trio.lowlevel.checkpoint()
        sessions = self._service._sessions
        asker = self._actr_id.type
        return [
            i
            for i in self._service.present()
            if i.type == actr_type and all(v.admits(asker) for v in sessions[i].visibility)
        ]

    def peer_address(self, peer: ActrId) -> str | None:
        # No discovery cache here: the service answers for any present peer this node may see.
        session = self._service._sessions.get(peer)
        if session is None or not all(v.admits(self._actr_id.type) for v in session.visibility):
            return None
        return session.listen

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

    def __init__(self, service: MemorySignaling, visibility: Sequence[Visibility] = ()) -> None:
        self._service = service
        self._visibility = tuple(visibility)

    async def run(
        self,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey | None = None,
        *,
        listen: str | None = None,
        task_status: trio.TaskStatus[SignalingSession] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        key = NodeKey.generate() if node_key is None else node_key
        session = self._service._register(actr_type, previous_id, key)
        session.visibility = self._visibility
        session.listen = listen
        try:
            task_status.started(session)
            await trio.sleep_forever()
        finally:
            self._service._unregister(session)
