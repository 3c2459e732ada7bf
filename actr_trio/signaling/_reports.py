"""Node reports on the signaling server: checked on arrival, kept per registered node, and
shown as :class:`NodeStatus` rows by ``actr-trio inspect`` and the status page.

A report comes from a node, so it is hostile input: every number is range-checked and every
string checked against a small alphabet before it is kept (:func:`report_from_wire` refuses
the whole report otherwise). Kept reports are bounded by construction (see
``_heartbeat_report.py``) and live in their connection's state, so they go when the node goes.
"""

from __future__ import annotations

import math
from typing import Any, Final, final

import attrs

from .._heartbeat_report import (
    MAX_LANES,
    MAX_RECENT_DEAD_LETTERS,
    MAX_ROUTE_CHARS,
    ROUTE_CHARS,
    HeartbeatReport,
    LaneSummary,
)
from .._ids import ActrId
from .._lanes import Lane, Priority
from ..errors import ConfigError
from ._protocol import Frame

#: Bounds of reported figures (exclusive): backlogs and unacknowledged envelopes, counters
#: (exact in a JSON number), peers per lane.
MAX_BACKLOG: Final = 2**40
MAX_COUNT: Final = 2**53
MAX_PEERS: Final = 2**20
#: Nodes in one Inspection page: a report is at most ~2 KiB, so a page always fits a frame.
INSPECT_PAGE: Final = 16
_LANE_NAMES: Final = frozenset(lane.name for lane in Lane)
_PRIORITY_NAMES: Final = tuple(p.name for p in sorted(Priority, reverse=True))


class ReportRefused(ValueError):
    """A report (or status row) over one of the bounds; the server ignores such a report."""


def _check(value: int, bound: int, what: str) -> int:
    if not 0 <= value < bound:
        raise ReportRefused(f"{what}={value} is out of range (0..{bound - 1})")
    return value


def report_from_wire(msg: Frame.NodeReport) -> HeartbeatReport:
    """The report ``msg`` carries, once every field is checked.

    Raises:
        ReportRefused: a field out of range, too many entries, or a string outside its alphabet.
    """
    if len(msg.backlog) != len(_PRIORITY_NAMES):
        raise ReportRefused(f"backlog has {len(msg.backlog)} entries (one per priority: 3)")
    high, normal, low = (_check(n, MAX_BACKLOG, "backlog") for n in msg.backlog)
    if len(msg.lanes) > MAX_LANES:
        raise ReportRefused(f"{len(msg.lanes)} lanes (at most {MAX_LANES})")
    lanes: list[LaneSummary] = []
    for lane in msg.lanes:
        if lane.lane not in _LANE_NAMES or any(seen.lane == lane.lane for seen in lanes):
            raise ReportRefused(f"lane {lane.lane[:32]!r} is unknown or repeated")
        lanes.append(
            LaneSummary(
                lane.lane,
                _check(lane.peers, MAX_PEERS, "peers"),
                _check(lane.unacked, MAX_BACKLOG, "unacked"),
            )
        )
    if len(msg.recent_dead_letters) > MAX_RECENT_DEAD_LETTERS:
        raise ReportRefused(
            f"{len(msg.recent_dead_letters)} dead letters named (at most {MAX_RECENT_DEAD_LETTERS})"
        )
    for route in msg.recent_dead_letters:
        if len(route) > MAX_ROUTE_CHARS or not (route == "?" or ROUTE_CHARS.fullmatch(route)):
            raise ReportRefused("a dead letter's route key is too long or has odd characters")
    return HeartbeatReport(
        backlog=(high, normal, low),
        handled=_check(msg.handled, MAX_COUNT, "handled"),
        accepted=_check(msg.accepted, MAX_COUNT, "accepted"),
        lanes=tuple(lanes),
        dead_letters=_check(msg.dead_letters, MAX_COUNT, "dead_letters"),
        recent_dead_letters=tuple(msg.recent_dead_letters),
    )


def report_to_wire(report: HeartbeatReport) -> Frame.NodeReport:
    """``report`` as a heartbeat carries it."""
    return Frame.NodeReport(
        backlog=list(report.backlog),
        handled=report.handled,
        accepted=report.accepted,
        lanes=[
            Frame.LaneReport(lane=x.lane, peers=x.peers, unacked=x.unacked) for x in report.lanes
        ],
        dead_letters=report.dead_letters,
        recent_dead_letters=list(report.recent_dead_letters),
    )


@final
@attrs.define
class Reported:
    """What the server keeps of one registered node: when it came, its last heartbeat, its
    latest valid report and the handled rate between its last two reports."""

    since: float  # Unix seconds of the registration
    heartbeat_at: float  # the server's monotonic clock
    report: HeartbeatReport | None = None
    reported_at: float = 0.0
    rate: float = 0.0

    def heartbeat(self, now: float, report: HeartbeatReport | None) -> None:
        """A heartbeat arrived at ``now``, with ``report`` if it carried a valid one."""
        self.heartbeat_at = now
        if report is None:
            return
        previous, elapsed = self.report, now - self.reported_at
        if previous is not None and elapsed > 0 and report.handled >= previous.handled:
            self.rate = (report.handled - previous.handled) / elapsed
        else:  # the first report, or the counter went back (cannot happen on one connection)
            self.rate = 0.0
        self.report = report
        self.reported_at = now

    def status(self, actr_id: ActrId, now: float) -> NodeStatus:
        """The row ``inspect`` shows for this node at ``now``."""
        return NodeStatus(
            actr_id=actr_id,
            since=self.since,
            heartbeat_age=max(0.0, now - self.heartbeat_at),
            report=self.report,
            handled_rate=self.rate,
        )


def _finite(value: float, what: str) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ReportRefused(f"{what}={value!r} is not a finite non-negative number")
    return value


@final
@attrs.frozen
class NodeStatus:
    """One node of a realm as ``actr-trio inspect`` and the status page show it.

    Attributes:
        actr_id: the node.
        since: Unix seconds when it registered.
        heartbeat_age: seconds since its last heartbeat.
        report: its latest report (``None`` before its first valid one).
        handled_rate: envelopes handled per second between its last two reports.
    """

    actr_id: ActrId
    since: float
    heartbeat_age: float
    report: HeartbeatReport | None
    handled_rate: float

    def to_wire(self) -> Frame.NodeStatus:
        """This row as an Inspection carries it."""
        msg = Frame.NodeStatus(
            actr_id=self.actr_id.to_proto(),
            since=self.since,
            heartbeat_age=self.heartbeat_age,
            handled_rate=self.handled_rate,
        )
        if self.report is not None:
            msg.report.CopyFrom(report_to_wire(self.report))
        return msg

    @classmethod
    def from_wire(cls, msg: Frame.NodeStatus) -> NodeStatus:
        """The row ``msg`` carries, checked like a node's report.

        Raises:
            ReportRefused: a field out of range or an invalid id.
        """
        try:
            actr_id = ActrId.from_proto(msg.actr_id)
        except ConfigError as exc:
            raise ReportRefused(f"invalid node id: {exc}") from exc
        return cls(
            actr_id=actr_id,
            since=_finite(msg.since, "since"),
            heartbeat_age=_finite(msg.heartbeat_age, "heartbeat_age"),
            report=report_from_wire(msg.report) if msg.HasField("report") else None,
            handled_rate=_finite(msg.handled_rate, "handled_rate"),
        )

    def to_json(self) -> dict[str, Any]:
        """This row as ``inspect --json`` and the status page's ``/api/nodes`` give it (the
        report's fields are ``null`` before the node's first report)."""
        report = self.report
        return {
            "id": str(self.actr_id),
            "type": str(self.actr_id.type),
            "serial": self.actr_id.serial,
            "since": self.since,
            "heartbeat_age": round(self.heartbeat_age, 3),
            "handled_rate": round(self.handled_rate, 3),
            "pending": None if report is None else report.pending,
            "backlog": None
            if report is None
            else dict(zip(_PRIORITY_NAMES, report.backlog, strict=True)),
            "handled": None if report is None else report.handled,
            "accepted": None if report is None else report.accepted,
            "lanes": None
            if report is None
            else [{"lane": x.lane, "peers": x.peers, "unacked": x.unacked} for x in report.lanes],
            "dead_letters": None if report is None else report.dead_letters,
            "recent_dead_letters": None if report is None else list(report.recent_dead_letters),
        }
