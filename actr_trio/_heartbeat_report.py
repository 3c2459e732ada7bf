"""What a node reports about itself with its signaling heartbeats: a few bounded figures.

The signaling server keeps the latest report of each registered node for ``actr-trio inspect``
and the status page (docs/observability.md). Everything here is small by construction (three
priorities, at most four lanes, the newest eight dead letters' route keys), and the server
checks the same bounds again: what a node sends is not trusted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, final, runtime_checkable

import attrs

from ._dispatcher import Dispatcher
from ._envelope import decode_envelope
from ._lanes import PRIORITIES_HIGH_FIRST
from ._logging import NODE
from ._mailbox import Mailbox
from ._outgate import OutGate
from .errors import EnvelopeTooLarge, MalformedEnvelope

log = logging.getLogger(NODE)

#: Lanes in a report at most (one entry per lane).
MAX_LANES: Final = 4
#: Newest dead letters whose route keys a report names.
MAX_RECENT_DEAD_LETTERS: Final = 8
#: Characters of one reported route key at most (longer ones are cut).
MAX_ROUTE_CHARS: Final = 200
#: What a reported route key may hold (others are replaced by "?"): a server shows it to people.
ROUTE_CHARS: Final = re.compile(r"[A-Za-z0-9._\-/:]+")


@final
@attrs.frozen
class LaneSummary:
    """One lane of a node's outbound links.

    Attributes:
        lane: the ``Lane`` name (``"RELIABLE"``...).
        peers: peers the node has a link to on this lane.
        unacked: envelopes sent on it and not acknowledged yet.
    """

    lane: str
    peers: int
    unacked: int


@final
@attrs.frozen
class HeartbeatReport:
    """The figures one heartbeat carries.

    Attributes:
        backlog: pending envelopes per priority, ``HIGH``, ``NORMAL``, ``LOW``.
        handled: envelopes handled since the node started.
        accepted: envelopes the mailbox accepted since it opened.
        lanes: the lanes with outbound links.
        dead_letters: envelopes in the dead-letter table.
        recent_dead_letters: route keys of the newest dead letters, newest last.
    """

    backlog: tuple[int, int, int]
    handled: int
    accepted: int
    lanes: tuple[LaneSummary, ...] = ()
    dead_letters: int = 0
    recent_dead_letters: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """The whole backlog, whatever the priority."""
        return sum(self.backlog)


@runtime_checkable
class ReportCarrier(Protocol):
    """A signaling connector that carries a node's reports in its heartbeats (the WebSocket
    client does; ``LocalRealm``'s in-process one has no server to tell)."""

    def report_with(self, source: Callable[[], Awaitable[HeartbeatReport]]) -> None:
        """Await ``source()`` before each heartbeat and send what it returns with it."""
        ...


def clean_route(route_key: str) -> str:
    """``route_key`` as a report may carry it: cut to :data:`MAX_ROUTE_CHARS`, characters
    outside :data:`ROUTE_CHARS` replaced by ``?``; ``"?"`` if it is empty."""
    cut = route_key[:MAX_ROUTE_CHARS]
    if ROUTE_CHARS.fullmatch(cut):
        return cut
    return "".join(c if ROUTE_CHARS.fullmatch(c) else "?" for c in cut) or "?"


@final
class ReportSource:
    """Builds a running node's :class:`HeartbeatReport` (the signaling client awaits it
    before each heartbeat).

    Reading dead letters costs a database read, so their route keys are read again only when
    the mailbox's count of dead letters moved since the last report.
    """

    def __init__(
        self, *, mailbox: Mailbox, dispatcher: Dispatcher, outgate: OutGate, max_payload: int
    ) -> None:
        self._mailbox = mailbox
        self._dispatcher = dispatcher
        self._outgate = outgate
        self._max_payload = max_payload
        self._seen: tuple[int, int] | None = None  # (dead letters, dropped) at the last read
        self._recent: tuple[str, ...] = ()

    async def __call__(self) -> HeartbeatReport:
        """The node's figures now."""
        stats = self._mailbox.statistics()
        pending = dict(stats.pending_by_priority)
        high, normal, low = (pending.get(p, 0) for p in PRIORITIES_HIGH_FIRST)
        lanes = tuple(
            LaneSummary(lane.name, peers, unacked)
            for lane, (peers, unacked) in sorted(self._outgate.lane_summary().items())
        )[:MAX_LANES]
        seen = (stats.dead_letters, stats.dead_letters_dropped)
        if seen != self._seen:
            self._recent = await self._recent_dead_letters()
            self._seen = seen
        return HeartbeatReport(
            backlog=(high, normal, low),
            handled=self._dispatcher.scheduler.statistics().handled,
            accepted=stats.accepted,
            lanes=lanes,
            dead_letters=stats.dead_letters,
            recent_dead_letters=self._recent,
        )

    async def _recent_dead_letters(self) -> tuple[str, ...]:
        letters = await self._mailbox.dead_letters()
        routes: list[str] = []
        for letter in letters[-MAX_RECENT_DEAD_LETTERS:]:
            stored = letter.envelope
            # One that came in process is kept without its encoding; the dispatcher has it.
            kept = self._dispatcher.dead_envelope(stored.caller, stored.request_id)
            if kept is not None:
                routes.append(clean_route(kept.route_key))
                continue
            try:
                env = decode_envelope(stored.data, max_payload=self._max_payload)
            except (MalformedEnvelope, EnvelopeTooLarge):  # counted; its name is unknown
                log.debug("dead letter %d: envelope unreadable", stored.id)
                routes.append("?")
                continue
            routes.append(clean_route(env.route_key))
        return tuple(routes)
