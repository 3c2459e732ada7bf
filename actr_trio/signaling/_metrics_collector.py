"""The signaling server's Prometheus metrics, read at scrape time (docs/observability.md).

Needs the optional ``prometheus-client`` (``actr-trio[metrics]``): importing this module without
it raises :class:`~actr_trio.errors.MetricsUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .._metrics_export import (
    Collector,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    counter,
)
from ._server import SignalingServerStatistics

__all__ = ["SignalingCollector"]


class SignalingCollector(Collector):
    """A signaling server's metrics, read at scrape time (docs/observability.md)."""

    def __init__(self, statistics: Callable[[], SignalingServerStatistics]) -> None:
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()
        yield GaugeMetricFamily(
            "actr_signaling_connections", "Open connections, in any phase.", s.connections
        )
        yield CounterMetricFamily(
            "actr_signaling_connections_accepted",
            "Connections accepted (within the caps).",
            value=s.accepted,
        )
        refused = counter(
            "actr_signaling_connections_refused",
            "Connections closed on accept, by cap.",
            ["reason"],
        )
        refused.add_metric(["server_full"], s.refused_server_full)
        refused.add_metric(["address_full"], s.refused_address_full)
        yield refused
        closed = counter(
            "actr_signaling_connections_closed",
            "Connections the server closed: no registration within the hello timeout "
            "(register_timeout), far over their message rate (rate), not reading (slow_reader).",
            ["reason"],
        )
        closed.add_metric(["register_timeout"], s.register_timeouts)
        closed.add_metric(["rate"], s.rate_closed)
        closed.add_metric(["slow_reader"], s.slow_readers)
        yield closed
        nodes = GaugeMetricFamily(
            "actr_signaling_registered_nodes",
            "Registered nodes, per realm and type.",
            labels=["realm", "type"],
        )
        for realm, actr_type, n in sorted(s.registered_by_type, key=lambda r: (r[0], str(r[1]))):
            nodes.add_metric([realm, str(actr_type)], n)
        yield nodes
        yield CounterMetricFamily(
            "actr_signaling_relays", "Relays forwarded to their target.", value=s.relays_forwarded
        )
        relays = counter(
            "actr_signaling_relays_refused",
            "Relays refused: payload over the cap (too_large), target's queue full (busy).",
            ["reason"],
        )
        relays.add_metric(["too_large"], s.relays_too_large)
        relays.add_metric(["busy"], s.relays_busy)
        yield relays
        yield CounterMetricFamily(
            "actr_signaling_auth_failures",
            "Connections refused because their realm proof failed.",
            value=s.auth_failures,
        )
        throttled = counter(
            "actr_signaling_auth_throttled",
            "Connections from addresses that failed before: delayed, or turned away at once.",
            ["outcome"],
        )
        throttled.add_metric(["delayed"], s.auth_throttled)
        throttled.add_metric(["turned_away"], s.auth_turned_away)
        yield throttled
        limited = counter(
            "actr_signaling_rate_limited",
            "Requests refused over their connection's budget: frames, discovery, relays.",
            ["what"],
        )
        limited.add_metric(["frames"], s.rate_limited)
        limited.add_metric(["discovery"], s.discovery_limited)
        limited.add_metric(["relays"], s.relays_limited)
        yield limited
        yield CounterMetricFamily(
            "actr_signaling_rejected_frames",
            "Frames refused as undecodable or oversized.",
            value=s.rejected_frames,
        )
