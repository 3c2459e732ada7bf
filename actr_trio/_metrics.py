"""What a node counts for its metrics while it runs (``Config.metrics``; docs/observability.md).

Most figures are read at scrape time from the statistics snapshots the components keep anyway
(``_metrics_export.py``). This module holds only what those snapshots lack, counted on the
path: envelopes per route and priority, and latency histograms (plain bucket arrays, turned into
Prometheus families at scrape time). A node without ``Config.metrics`` has no
:class:`NodeMetrics` and pays one ``is None`` test per hook.

Label values are bounded: a route outside the workload's route table (what a hostile peer
may name) is counted as ``unknown``, and at most :data:`MAX_TARGET_TYPES` target types are
kept apart (the rest are ``other``).

Nothing here imports ``prometheus_client``: the optional extra is needed only to serve.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection
from typing import Final, final

from ._ids import ActrType
from ._lanes import Lane, Priority
from .errors import CallError

__all__ = [
    "LATENCY_BUCKETS",
    "UNKNOWN",
    "Histogram",
    "NodeMetrics",
    "refusal_reason",
    "split_address",
]

#: Upper bounds (seconds) of the latency histograms' buckets: 50 µs (an in-process call) to
#: 10 s (a handler near a typical deadline).
LATENCY_BUCKETS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: The label value of a route not in the workload's route table (or not decoded at all).
UNKNOWN: Final = "unknown"
#: Target types of calls kept apart in the call latency histogram; later ones share ``other``.
MAX_TARGET_TYPES: Final = 256
OTHER: Final = "other"

# Counters per priority and histograms per lane are lists indexed by the enum's value: an
# IntEnum indexes a list at C speed, while hashing it (a dict key) calls Enum.__hash__.
_PRIORITY_SLOTS: Final = max(Priority) + 1
_LANE_SLOTS: Final = max(Lane) + 1


@final
class Histogram:
    """Counts per bucket (not cumulative; the last one is ``+Inf``) and the sum of values."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' ``le``).
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


@final
class RouteFigures:
    """One route's counters, each a list indexed by priority value, and its handler latency."""

    __slots__ = ("accepted", "dead_lettered", "handled", "latency", "replayed")

    def __init__(self) -> None:
        self.accepted = [0] * _PRIORITY_SLOTS
        self.handled = [0] * _PRIORITY_SLOTS
        self.replayed = [0] * _PRIORITY_SLOTS
        self.dead_lettered = [0] * _PRIORITY_SLOTS
        self.latency = Histogram()


#: Call latency of one target type: a histogram per lane value (None until a call used it).
LaneHistograms = list[Histogram | None]


@final
class NodeMetrics:
    """The per-route counters and histograms of one node (see the module docstring)."""

    def __init__(self, routes: Collection[str]) -> None:
        #: Every route of the workload, and ``unknown`` for any other key.
        self.routes = {route: RouteFigures() for route in routes}
        self.unknown = RouteFigures()
        #: (route, priority name, reason) -> refusals (rare: a dict of labels is fine).
        self.refused: dict[tuple[str, str, str], int] = {}
        #: Target type -> latency of calls this node made to it, per lane.
        self.calls: dict[ActrType, LaneHistograms] = {}
        #: Target types beyond MAX_TARGET_TYPES share these.
        self.other_calls: LaneHistograms = [None] * _LANE_SLOTS
        # The last target type called, by identity: hashing an ActrType is a Python call, and
        # a caller mostly calls the same peers (same ActrId objects) again.
        self._last_type: ActrType | None = None
        self._last_lanes = self.other_calls

    def on_accepted(self, route_key: str, priority: Priority) -> None:
        self.routes.get(route_key, self.unknown).accepted[priority] += 1

    def on_replayed(self, route_key: str, priority: Priority) -> None:
        self.routes.get(route_key, self.unknown).replayed[priority] += 1

    def on_dead_lettered(self, route_key: str, priority: Priority) -> None:
        self.routes.get(route_key, self.unknown).dead_lettered[priority] += 1

    def on_refused(self, route_key: str | None, priority: Priority | None, reason: str) -> None:
        key = (
            route_key if route_key in self.routes else UNKNOWN,
            UNKNOWN if priority is None else priority.name.lower(),
            reason,
        )
        self.refused[key] = self.refused.get(key, 0) + 1

    def on_handled(
        self, route_key: str, priority: Priority, seconds: float, finished: bool
    ) -> None:
        """A handler ran for ``seconds``; ``finished``: not to be retried (``Retryable``)."""
        figures = self.routes.get(route_key, self.unknown)
        if finished:
            figures.handled[priority] += 1
        latency = figures.latency  # Histogram.observe, inlined: once per handled envelope
        latency.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.sum += seconds

    def on_call(self, target_type: ActrType, lane: Lane, seconds: float) -> None:
        """A call to a node of ``target_type`` got its answer after ``seconds``."""
        if target_type is self._last_type:
            lanes = self._last_lanes
        else:
            lanes = self.calls.get(target_type) or self._lanes_of(target_type)
            self._last_type, self._last_lanes = target_type, lanes
        histogram = lanes[lane]
        if histogram is None:
            histogram = lanes[lane] = Histogram()
        histogram.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram.sum += seconds

    def _lanes_of(self, target_type: ActrType) -> LaneHistograms:
        if len(self.calls) >= MAX_TARGET_TYPES:
            return self.other_calls
        lanes: LaneHistograms = [None] * _LANE_SLOTS
        self.calls[target_type] = lanes
        return lanes


def split_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9464"`` for IPv6) as ``(host, port)``; port 0 picks a free one.

    Raises:
        ValueError: not that form, or the port is not 0 to 65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r} has no host")
    return host, int(port)


def refusal_reason(error: CallError) -> str:
    """The ``reason`` label of a refusal: its code (``overloaded``, ``acl``, ...), else the
    error's kind (``route_not_found``, ``envelope_too_large``, ``remote_shutting_down``)."""
    if error.code:
        return error.code
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
