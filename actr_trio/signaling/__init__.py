"""The signaling server and the node's signaling client.

``actr-trio signaling --host 127.0.0.1 --port 8765`` runs the server; embed it with
``async with actr_trio.signaling.serve(port=0) as server:`` (``server.url``) or
``await nursery.start(SignalingServer(...).run)``, and its Prometheus metrics with
``await nursery.start(serve_metrics, server, "127.0.0.1:9465")``. Nodes use
:class:`SignalingClient`, the WebSocket implementation of
``actr_trio.transport.SignalingConnector``.

Layout: ``_protocol.py`` (the frame codec and the rules), ``_server_protocol.py`` (with
``_server_routing.py``, ``_server_state.py``, ``_server_effects.py``) and
``_client_protocol.py`` (sans-IO sessions), ``_directory.py`` (who holds which id),
``_limits.py`` and ``_throttle.py`` (sans-IO budgets), ``_server.py`` with
``_server_sessions.py`` and ``_client.py`` with ``_client_websocket.py``, ``_client_link.py``
and ``_client_trust.py`` (Trio shells, trio-websocket), ``_store.py`` (SQLite), ``_cli.py``,
``_metrics.py`` and ``_metrics_collector.py`` (Prometheus); what nodes report in
their heartbeats (``_reports.py``), the realm observer behind ``actr-trio inspect``
(``_inspect.py``, ``_inspect_cli.py``) and the status page (``_status_page.py``, its files in
``_status_assets.py``).
The names below are imported lazily (PEP 562), so that building the ``actr-trio`` command line
(which imports ``_cli``) does not import trio-websocket or sqlite-utils.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._client import SignalingClient as SignalingClient
    from ._client import SignalingClientStatistics as SignalingClientStatistics
    from ._inspect import inspect_realm as inspect_realm
    from ._limits import SignalingLimits as SignalingLimits
    from ._metrics import serve_metrics as serve_metrics
    from ._reports import NodeStatus as NodeStatus
    from ._server import SignalingServer as SignalingServer
    from ._server import SignalingServerStatistics as SignalingServerStatistics
    from ._server import serve as serve
    from ._status_page import StatusPage as StatusPage

__all__ = [
    "NodeStatus",
    "SignalingClient",
    "SignalingClientStatistics",
    "SignalingLimits",
    "SignalingServer",
    "SignalingServerStatistics",
    "StatusPage",
    "inspect_realm",
    "serve",
    "serve_metrics",
]

_MODULES = {
    "SignalingClient": "._client",
    "SignalingClientStatistics": "._client",
    "SignalingLimits": "._limits",
    "SignalingServer": "._server",
    "SignalingServerStatistics": "._server",
    "serve": "._server",
    "serve_metrics": "._metrics",
    "NodeStatus": "._reports",
    "StatusPage": "._status_page",
    "inspect_realm": "._inspect",
}


def __getattr__(name: str) -> object:
    module_name = _MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value: object = getattr(importlib.import_module(module_name, __name__), name)
    # Tracebacks and reprs name the public module, not a private one.
    value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
