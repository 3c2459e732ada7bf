"""The state ``ServerProtocol`` keeps (sans-IO): each connection's session, and its snapshot."""

from __future__ import annotations

from typing import Final, final

import attrs

from .._acl import Visibility
from .._ids import ActrId, ActrType
from ._limits import ConnectionBudget
from ._protocol import Phase
from ._reports import Reported


@attrs.define(eq=False)
class ConnectionState:
    """One connection's session on the server: its phase, identity, budgets and reports."""

    phase: Phase
    last_seen: float
    connected_at: float
    budget: ConnectionBudget
    realm: str = ""
    nonce: bytes = b""
    actr_id: ActrId | None = None
    visibility: tuple[Visibility, ...] = ()  # who may discover it (its ACLs); () is everyone
    listen: str = ""  # where it takes direct WebSocket links (Register.listen); "": nowhere
    public_key: bytes = b""  # the node key, once its possession was proved
    actr_type: ActrType | None = None  # asked for in Register
    renew_at: float = 0.0  # when (``now``'s clock) the credential is due for renewal
    reported: Reported | None = None  # once registered: its heartbeats and latest report


# Phases of a connection that proved its realm and got past the hello timeout: rated, kept
# alive by its own frames.
ADMITTED: Final = frozenset({Phase.REGISTERED, Phase.OBSERVING})


@final
@attrs.frozen
class ServerProtocolStatistics:
    """Snapshot of the server machine.

    Attributes:
        connections: open connections, in any phase.
        registered: connections holding an ``ActrId``.
        realms: realms with at least one registered connection.
        register_timeouts: connections closed for not registering within the hello timeout.
        rate_limited: frames refused over their connection's message rate.
        rate_closed: connections closed for going on far over their message rate.
        discovery_limited: discovery requests refused over their connection's discovery budget.
        relays_limited: relays refused over the budget of their (source, target) pair.
        relays_too_large: relays refused because their payload was over the size cap.
        relays_forwarded: relays queued for their target's connection.
        registered_by_type: ``(realm, type, registered connections)``, for the metrics.
        reports_refused: heartbeat reports ignored because a figure was out of range.
    """

    connections: int
    registered: int
    realms: int
    register_timeouts: int = 0
    rate_limited: int = 0
    rate_closed: int = 0
    discovery_limited: int = 0
    relays_limited: int = 0
    relays_too_large: int = 0
    relays_forwarded: int = 0
    registered_by_type: tuple[tuple[str, ActrType, int], ...] = ()
    reports_refused: int = 0
