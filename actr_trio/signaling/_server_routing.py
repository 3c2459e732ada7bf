"""Discovery and relays between the registered connections of a realm (sans-IO).

Part of :class:`~._server_protocol.ServerProtocol`, which owns the connections and the
directory this reads: who is present and may be found by whom (discovery pages, with the
listen addresses they advertise), and whether a relay may pass (its size, its target, the
budget of its (source, target) pair). Another realm's node is "unavailable", exactly like an
unknown one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from .._ids import ActrId, ActrType
from ..errors import ConfigError
from ._directory import Directory
from ._limits import SignalingLimits
from ._protocol import (
    _RELAY_NAMES,
    BAD_REQUEST,
    MAX_PAGE_SIZE,
    OVERLOADED,
    PEER_UNAVAILABLE,
    TOO_LARGE,
    Frame,
    Phase,
    error_frame,
)
from ._server_effects import Forward, Send, ServerEffect
from ._server_state import ConnectionState


@final
class Routing:
    """Answers ``Discover`` and ``Relay`` frames of registered connections, and counts refusals.

    Args:
        connections: the server's connections (read only here).
        directory: who holds which ``ActrId`` (read only here).
        limits: the discovery, relay and size budgets.
        presence_timeout: seconds of silence after which a node is no longer present.
    """

    def __init__(
        self,
        connections: Mapping[int, ConnectionState],
        directory: Directory,
        limits: SignalingLimits,
        presence_timeout: float,
    ) -> None:
        self._connections = connections
        self._directory = directory
        self._limits = limits
        self._presence_timeout = presence_timeout
        self.discovery_limited = 0
        self.relays_limited = 0
        self.relays_too_large = 0
        self.relays_forwarded = 0

    def present(self, conn: int, now: float) -> bool:
        """Whether ``conn`` is registered and was heard from within the presence timeout."""
        state = self._connections.get(conn)
        return (
            state is not None
            and state.phase is Phase.REGISTERED
            and now - state.last_seen <= self._presence_timeout
        )

    def discoverable(
        self, realm: str, actr_type: ActrType, now: float, *, asker: ActrType | None = None
    ) -> list[ActrId]:
        """Registered, present nodes of ``actr_type`` in ``realm``, by serial; with ``asker``,
        only those whose ACLs let a node of that type see them."""
        return [
            actr_id
            for actr_id, conn in self._directory.members(realm, actr_type, 0)
            if self.present(conn, now) and (asker is None or self._visible(conn, asker))
        ]

    def page(
        self,
        realm: str,
        actr_type: ActrType,
        now: float,
        *,
        asker: ActrType | None = None,
        cursor: int = 0,
        page_size: int = MAX_PAGE_SIZE,
    ) -> tuple[list[ActrId], int]:
        """One page of :meth:`discoverable`: at most ``page_size`` (capped at
        ``MAX_PAGE_SIZE``) of those with a serial above ``cursor``, and the cursor of the next
        page (0 when this is the last)."""
        size = min(max(page_size, 1), MAX_PAGE_SIZE)
        found: list[ActrId] = []
        for actr_id, conn in self._directory.members(realm, actr_type, cursor):
            if len(found) == size:
                return found, found[-1].serial  # someone follows: there is a next page
            if self.present(conn, now) and (asker is None or self._visible(conn, asker)):
                found.append(actr_id)
        return found, 0

    def _addresses(self, found: list[ActrId]) -> list[Frame.PeerAddress]:
        """The advertised listen addresses of ``found`` (those that have one)."""
        addresses = []
        for actr_id in found:
            holder = self._directory.holder(actr_id)
            listen = self._connections[holder].listen if holder is not None else ""
            if listen:
                addresses.append(Frame.PeerAddress(actr_id=actr_id.to_proto(), listen=listen))
        return addresses

    def _visible(self, conn: int, asker: ActrType) -> bool:
        return all(v.admits(asker) for v in self._connections[conn].visibility)

    def discover(
        self, conn: int, state: ConnectionState, discover: Frame.Discover, now: float
    ) -> list[ServerEffect]:
        """A registered connection's ``Discover``: one page of its realm, within its budget."""
        try:
            actr_type = ActrType.from_proto(discover.actr_type)
        except ConfigError as exc:
            return [Send(conn, error_frame(BAD_REQUEST, str(exc), discover.request_id))]
        assert state.actr_id is not None
        request_id = discover.request_id
        if not state.budget.discovery(now):
            self.discovery_limited += 1
            limits = self._limits
            message = (
                f"discovery budget exceeded ({limits.discovery_rate:g} peers/s, burst "
                f"{limits.discovery_burst}); retry later"
            )
            return [Send(conn, error_frame(OVERLOADED, message, request_id))]
        found, next_cursor = self.page(
            state.realm,
            actr_type,
            now,
            asker=state.actr_id.type,
            cursor=discover.cursor,
            page_size=discover.page_size or MAX_PAGE_SIZE,
        )
        state.budget.charge_discovery(now, len(found))
        peers = Frame.Peers(
            request_id=request_id,
            peers=[p.to_proto() for p in found],
            next_cursor=next_cursor,
            addresses=self._addresses(found),
        )
        return [Send(conn, Frame(peers=peers))]

    def relay(
        self, conn: int, state: ConnectionState, relay: Frame.RelayMessage, now: float
    ) -> list[ServerEffect]:
        """A registered connection's ``Relay``: forwarded to its target, or refused."""
        assert state.actr_id is not None
        request_id = relay.request_id
        if relay.kind not in _RELAY_NAMES:
            return [Send(conn, error_frame(BAD_REQUEST, f"relay kind {relay.kind}", request_id))]
        try:
            target = ActrId.from_proto(relay.target)
        except ConfigError as exc:
            return [Send(conn, error_frame(BAD_REQUEST, str(exc), request_id))]
        cap = self._limits.max_relay_payload
        # len() first: a payload of fewer characters than the cap's quarter fits whatever it holds.
        if len(relay.payload) * 4 > cap and len(relay.payload.encode()) > cap:
            self.relays_too_large += 1
            message = f"relay payload over {cap} bytes; not forwarded"
            return [Send(conn, error_frame(TOO_LARGE, message, request_id))]
        holder = self._directory.holder(target)
        # Rule 2: another realm's node is "unavailable", exactly like an unknown one.
        if target.realm != state.realm or holder is None or not self.present(holder, now):
            return [
                Send(conn, error_frame(PEER_UNAVAILABLE, f"{target} is not registered", request_id))
            ]
        if not state.budget.relay(now, target):
            self.relays_limited += 1
            limits = self._limits
            message = (
                f"relays to {target} over {limits.relay_rate:g}/s (burst {limits.relay_burst}); "
                "retry later"
            )
            return [Send(conn, error_frame(OVERLOADED, message, request_id))]
        forwarded = Frame.RelayMessage(
            source=state.actr_id.to_proto(),
            target=relay.target,
            kind=relay.kind,
            payload=relay.payload,
        )
        self.relays_forwarded += 1
        return [Forward(holder, Frame(relay=forwarded), origin=conn, request_id=request_id)]
