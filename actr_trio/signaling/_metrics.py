"""The signaling server's ``/metrics`` endpoint (``actr-trio signaling --metrics``)."""

from __future__ import annotations

import logging

import trio

from .._logging import SIGNALING
from .._metrics import split_address
from .._metrics_http import serve_metrics as serve_http
from ._server import SignalingServer

__all__ = ["metrics_address", "serve_metrics"]

log = logging.getLogger(SIGNALING)


def metrics_address(address: str) -> tuple[str, int]:
    """``address`` (``"HOST:PORT"``) as ``(host, port)``, once the extra is known installed.

    Raises:
        MetricsUnavailable: prometheus-client is not installed (``actr-trio[metrics]``).
        ConfigError: ``address`` is not HOST:PORT.
    """
    from .._metrics_export import render  # noqa: F401  (the extra is there)
    from ..errors import ConfigError

    try:
        return split_address(address)
    except ValueError as exc:
        raise ConfigError(f"metrics address: {exc}") from exc


async def serve_metrics(
    server: SignalingServer,
    address: str,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``server``'s figures at ``http://ADDRESS/metrics`` until cancelled
    (docs/observability.md); ``task_status.started((host, port))`` once listening.

    Args:
        address: ``"HOST:PORT"`` (``"[::1]:PORT"``); port 0 picks a free one.

    Raises:
        MetricsUnavailable: prometheus-client is not installed (``actr-trio[metrics]``).
        ConfigError: ``address`` is not HOST:PORT.
        OSError: the address cannot be bound.
    """
    host, port = metrics_address(address)
    from .._metrics_export import render
    from ._metrics_collector import SignalingCollector

    page = render(SignalingCollector(server.statistics))
    await serve_http(host, port, page, log=log, task_status=task_status)
