"""The signaling server's Prometheus metrics, scraped over real HTTP on 127.0.0.1 (in process,
and from ``actr-trio signaling --metrics`` as a real process), parsed with prometheus_client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from actr_trio._config import Config
from actr_trio._ids import ActrType
from actr_trio.errors import AuthError
from actr_trio.signaling import SignalingClient, serve, serve_metrics
from actr_trio.signaling._cli import REALMS_ENV
from actr_trio.transport._abc import SignalingSession

pytestmark = pytest.mark.integration

ECHO = ActrType("acme", "echo")
CALLER = ActrType("acme", "caller")
HOST = "127.0.0.1"
REALMS = {"alpha": "alpha-secret-16bytes", "beta": "beta-secret-16bytes"}
BOUND = 30


async def register(
    nursery: trio.Nursery, url: str, actr_type: ActrType, realm: str = "alpha"
) -> SignalingSession:
    client = SignalingClient(Config(realm=realm, signaling_url=url, realm_secret=REALMS[realm]))
    session: SignalingSession = await nursery.start(client.run, actr_type, None, None)
    return session


async def scrape(host: str, port: int) -> dict[str, Metric]:
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def value(families: dict[str, Metric], family: str, sample: str, **labels: str) -> float:
    found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, (sample, labels, families[family].samples)
    return found[0]


async def test_a_scrape_shows_connections_registrations_relays_and_auth_failures() -> None:
    with trio.fail_after(BOUND):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_metrics, server, f"{HOST}:0")
            echo = await register(nursery, server.url, ECHO)
            await register(nursery, server.url, ECHO)
            caller = await register(nursery, server.url, CALLER)
            await register(nursery, server.url, ECHO, realm="beta")
            await caller.send_relay(echo.actr_id, "offer", "v=0 sdp")
            await echo.relays.receive()  # forwarded
            # Last: the failure makes this address wait before its next connections.
            bad = SignalingClient(
                Config(realm="alpha", signaling_url=server.url, realm_secret="x" * 20)
            )
            with pytest.raises(AuthError):
                await nursery.start(bad.run, ECHO, None, None)
            m = await scrape(host, port)
            nursery.cancel_scope.cancel()

    nodes = "actr_signaling_registered_nodes"
    assert value(m, nodes, nodes, realm="alpha", type="acme:echo") == 2
    assert value(m, nodes, nodes, realm="alpha", type="acme:caller") == 1
    assert value(m, nodes, nodes, realm="beta", type="acme:echo") == 1
    assert m[nodes].type == "gauge"
    # The four registered ones are open; the failed one may still be closing.
    assert value(m, "actr_signaling_connections", "actr_signaling_connections") >= 4
    accepted = "actr_signaling_connections_accepted"
    assert value(m, accepted, accepted + "_total") == 5
    assert value(m, "actr_signaling_relays", "actr_signaling_relays_total") == 1
    auth = "actr_signaling_auth_failures"
    assert value(m, auth, auth + "_total") == 1
    limited = "actr_signaling_rate_limited"
    for what in ("frames", "discovery", "relays"):
        assert value(m, limited, limited + "_total", what=what) == 0
    assert m[limited].type == "counter"


async def test_the_cli_serves_metrics_with_the_metrics_option(tmp_path: Path) -> None:
    log = tmp_path / "signaling.log"
    with trio.fail_after(BOUND):
        async with await trio.open_file(log, "ab") as stderr:
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "actr_trio.cli",
                    "signaling",
                    "--host",
                    HOST,
                    "--port",
                    "0",
                    "--metrics",
                    f"{HOST}:0",
                ],
                stdout=subprocess.PIPE,
                stderr=stderr.fileno(),
                env={**os.environ, REALMS_ENV: "alpha:alpha-secret-16bytes"},
            )
        try:
            assert proc.stdout is not None
            buffer = b""
            while b"/metrics\n" not in buffer:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"signaling exited early: {log.read_text()}"
                buffer += chunk
            line = next(
                line for line in buffer.decode().splitlines() if "signaling metrics at" in line
            )
            address = line.rsplit("http://", 1)[1].removesuffix("/metrics")
            host, port = address.rsplit(":", 1)
            m = await scrape(host, int(port))
            assert value(m, "actr_signaling_connections", "actr_signaling_connections") == 0
            assert m["actr_signaling_registered_nodes"].samples == []
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, log.read_text()
