"""Prometheus exposition of a node's figures (docs/observability.md); the signaling server's
collector (``signaling/_metrics.py``) is built from the same pieces.

Each scrape builds the metric families afresh from the statistics snapshots (and, for a
node, the per-route counters of :class:`~actr_trio._metrics.NodeMetrics`): nothing is kept in
``prometheus_client``'s own metric objects, so the hot path never touches it. Every node and
server gets its own registry (several nodes may run in one process).

Importing this module needs the optional ``prometheus-client`` (``actr-trio[metrics]``); without
it the import raises :class:`~actr_trio.errors.MetricsUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ._fastlane import FastLaneStatistics
from ._ids import ActrId
from ._lanes import PRIORITIES_HIGH_FIRST, Lane, Priority
from ._mailbox import MailboxStatistics
from ._metrics import (
    LATENCY_BUCKETS,
    OTHER,
    UNKNOWN,
    Histogram,
    LaneHistograms,
    NodeMetrics,
    RouteFigures,
)
from ._metrics_transport import MeteredTransport
from ._outgate import OutGateStatistics
from .errors import MetricsUnavailable

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # the optional extra is not installed
    raise MetricsUnavailable(
        "metrics need prometheus-client: pip install 'actr-trio[metrics]'"
    ) from exc

__all__ = [
    "Collector",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "Metric",
    "NodeCollector",
    "counter",
    "render",
]

_BOUNDS = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]


def render(collector: Collector) -> Callable[[], bytes]:
    """The text exposition of ``collector``, rendered at each call."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: generate_latest(registry)


def _priority(p: Priority) -> str:
    return p.name.lower()


class NodeStatistics(Protocol):
    """What the collector reads of ``ref.statistics()`` (``_node.NodeStatistics``)."""

    @property
    def actr_id(self) -> ActrId: ...

    @property
    def mailbox(self) -> MailboxStatistics: ...

    @property
    def outbound(self) -> OutGateStatistics: ...

    @property
    def streams(self) -> FastLaneStatistics: ...

    @property
    def tracks(self) -> FastLaneStatistics: ...


def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _histogram(
    name: str, doc: str, labels: list[str], items: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in items:
        cumulative, total = [], 0
        for bound, count in zip(_BOUNDS, histogram.counts, strict=True):
            total += count
            cumulative.append((bound, float(total)))
        family.add_metric(values, cumulative, histogram.sum)
    return family


def _routes(m: NodeMetrics) -> Iterator[tuple[str, RouteFigures]]:
    """The workload's routes, by name, then ``unknown`` if anything was counted there."""
    yield from sorted(m.routes.items())
    u = m.unknown
    if u.latency.count or any(any(c) for c in (u.accepted, u.replayed, u.dead_lettered)):
        yield UNKNOWN, u


def _per_route(
    name: str, doc: str, m: NodeMetrics, counts: Callable[[RouteFigures], list[int]]
) -> Metric:
    family = counter(name, doc, ["route", "priority"])
    for route, figures in _routes(m):
        per_priority = counts(figures)
        for priority in PRIORITIES_HIGH_FIRST:
            family.add_metric([route, _priority(priority)], per_priority[priority])
    return family


def _targets(m: NodeMetrics) -> Iterator[tuple[str, LaneHistograms]]:
    yield from sorted((str(t), lanes) for t, lanes in m.calls.items())
    if any(h is not None for h in m.other_calls):
        yield OTHER, m.other_calls


def _transport_statistics(t: MeteredTransport) -> list[tuple[str, object]]:
    """``(label, statistics)`` of the transport, read by duck typing (transports differ); the
    default transport reports its WebRTC and WebSocket halves apart."""
    statistics = getattr(t.inner, "statistics", None)
    if not callable(statistics):
        return []
    stats = statistics()
    halves = [(name, getattr(stats, name, None)) for name in ("webrtc", "websocket")]
    found = [(name, half) for name, half in halves if half is not None]
    return found or [(t.name, stats)]


class NodeCollector(Collector):
    """A node's metrics, read at scrape time (names and meanings: docs/observability.md)."""

    def __init__(
        self,
        statistics: Callable[[], NodeStatistics],
        metrics: NodeMetrics,
        transport: MeteredTransport,
        actr_type: str,
    ) -> None:
        self._statistics = statistics
        self._metrics = metrics
        self._transport = transport
        self._actr_type = actr_type

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        info = GaugeMetricFamily(
            "actr_node_info", "This node: its ActrId and workload type.", labels=["actr_id", "type"]
        )
        info.add_metric([str(s.actr_id), self._actr_type], 1)
        yield info
        yield from self._envelopes(s)
        yield from self._latency()
        yield from self._mailbox(s)
        yield from self._transport_figures()
        yield from self._fast_path(s)

    def _envelopes(self, s: NodeStatistics) -> Iterator[Metric]:
        m = self._metrics
        yield _per_route(
            "actr_envelopes_accepted",
            "Requests and tells this node's mailbox accepted.",
            m,
            lambda f: f.accepted,
        )
        yield _per_route(
            "actr_envelopes_handled",
            "Requests and tells whose handler returned or raised (retries not counted).",
            m,
            lambda f: f.handled,
        )
        yield _per_route(
            "actr_envelopes_replayed",
            "Envelopes re-queued from the mailbox at start (left by a previous run).",
            m,
            lambda f: f.replayed,
        )
        yield _per_route(
            "actr_envelopes_dead_lettered",
            "Envelopes moved to the dead-letter table after Config.max_attempts.",
            m,
            lambda f: f.dead_lettered,
        )
        refused = counter(
            "actr_envelopes_refused",
            "Requests and tells refused before the mailbox took them, by reason.",
            ["route", "priority", "reason"],
        )
        for (route, priority, reason), n in sorted(m.refused.items()):
            refused.add_metric([route, priority, reason], n)
        yield refused
        yield CounterMetricFamily(
            "actr_envelopes_duplicate",
            "Envelopes received again (same caller and request id) and not queued twice.",
            value=s.mailbox.duplicates,
        )
        sent = counter(
            "actr_envelopes_sent",
            "Envelopes this node sent over a transport (wire), or handed over in process and "
            "taken (direct).",
            ["path"],
        )
        sent.add_metric(["wire"], s.outbound.sent)
        sent.add_metric(["direct"], s.outbound.direct)
        yield sent
        yield CounterMetricFamily(
            "actr_envelopes_retransmitted",
            "Envelopes sent again because their acknowledgement did not come in time.",
            value=s.outbound.retransmitted,
        )
        yield GaugeMetricFamily(
            "actr_calls_waiting",
            "Calls this node waits on an answer for.",
            s.outbound.calls_waiting,
        )

    def _latency(self) -> Iterator[Metric]:
        m = self._metrics
        yield _histogram(
            "actr_handler_latency_seconds",
            "Time a handler ran, per route (retried runs included).",
            ["route"],
            (([route], f.latency) for route, f in _routes(m)),
        )
        yield _histogram(
            "actr_call_latency_seconds",
            "Time from a call to its answer, per target type and lane (failed calls are not "
            "observed).",
            ["target_type", "lane"],
            (
                ([target, lane.name.lower()], h)
                for target, lanes in _targets(m)
                for lane in Lane
                if (h := lanes[lane]) is not None
            ),
        )

    def _mailbox(self, s: NodeStatistics) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "actr_mailbox_depth",
            "Envelopes waiting in the mailbox (the running one included), per priority.",
            labels=["priority"],
        )
        for priority, n in s.mailbox.pending_by_priority:
            depth.add_metric([_priority(priority)], n)
        yield depth
        yield GaugeMetricFamily(
            "actr_mailbox_dead_letters",
            "Envelopes in the dead-letter table now.",
            s.mailbox.dead_letters,
        )

    def _transport_figures(self) -> Iterator[Metric]:
        t = self._transport
        labels = ["transport", "lane", "direction"]
        packets = counter("actr_transport_packets", "Packets through the transport.", labels)
        sent_bytes = counter("actr_transport_bytes", "Packet bytes through the transport.", labels)
        for (lane, direction), (n, size) in sorted(t.traffic.items()):
            values = [t.name, lane.name.lower(), direction]
            packets.add_metric(values, n)
            sent_bytes.add_metric(values, size)
        yield packets
        yield sent_bytes
        frames = counter(
            "actr_transport_frames",
            "Transport messages (a WebRTC frame packs many packets), per direction.",
            ["transport", "direction"],
        )
        open_links = GaugeMetricFamily(
            "actr_links_open", "Links to peers that are open.", labels=["transport"]
        )
        negotiating = GaugeMetricFamily(
            "actr_links_negotiating", "Links to peers being negotiated.", labels=["transport"]
        )
        for name, stats in _transport_statistics(t):
            frames_out = getattr(stats, "frames_sent", None)
            frames_in = getattr(stats, "frames_received", None)
            if isinstance(frames_out, int) and isinstance(frames_in, int):
                frames.add_metric([name, "out"], frames_out)
                frames.add_metric([name, "in"], frames_in)
            admission = getattr(stats, "admission", None)
            links = getattr(admission, "links", None)
            opening = getattr(admission, "negotiating", None)
            if isinstance(links, int) and isinstance(opening, int):
                open_links.add_metric([name], links - opening)
                negotiating.add_metric([name], opening)
        yield frames
        yield open_links
        yield negotiating

    def _fast_path(self, s: NodeStatistics) -> Iterator[Metric]:
        for what, stats, unit in (("stream", s.streams, "chunks"), ("track", s.tracks, "frames")):
            yield CounterMetricFamily(
                f"actr_{what}_{unit}_delivered",
                f"{what.capitalize()} {unit} handed to their callbacks' queues.",
                value=stats.delivered,
            )
            dropped = counter(
                f"actr_{what}_{unit}_dropped",
                f"{what.capitalize()} {unit} not delivered: late or over a full buffer "
                "(overflow_or_late), or with no callback registered (unrouted).",
                ["reason"],
            )
            dropped.add_metric(["overflow_or_late"], stats.dropped)
            dropped.add_metric(["unrouted"], stats.unrouted)
            yield dropped
