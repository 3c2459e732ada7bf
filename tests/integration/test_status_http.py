"""The status page's HTTP side over real sockets on 127.0.0.1: what it serves, to whom (loopback
``Host`` only, realm credentials when required, one realm per credential), and that it is
read-only. The browser's view is in test_status_page.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import pytest
import trio

from actr_trio._config import Config
from actr_trio._ids import ActrType
from actr_trio.errors import ConfigError
from actr_trio.signaling import SignalingClient, SignalingServer, serve
from actr_trio.signaling._status_page import StatusPage

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
REALMS = {"alpha": "alpha-secret-16bytes", "beta": "beta-secret-16bytes"}
ECHO = ActrType("acme", "echo")

Response = tuple[int, dict[str, str], bytes]


async def fetch(
    url: str,
    paths: Sequence[str],
    *,
    method: str = "GET",
    host: str | None = None,
    auth: tuple[str, str] | None = None,
) -> list[Response]:
    """GET (or ``method``) each of ``paths`` in turn on one kept-alive connection."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    headers = [("Host", host or parts.netloc)]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers.append(("Authorization", f"Basic {token}"))
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    answers: list[Response] = []
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        for path in paths:
            request = h11.Request(method=method, target=path, headers=headers)
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, head, body = 0, {}, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    head = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            answers.append((status, head, body))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    return answers


@asynccontextmanager
async def page_with_a_node(**options: object) -> AsyncIterator[tuple[SignalingServer, StatusPage]]:
    """A server with one alpha node registered (it reports nothing: a long heartbeat), and its
    status page."""
    async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
        config = Config(
            realm="alpha",
            signaling_url=server.url,
            realm_secret=REALMS["alpha"],
            heartbeat_interval=60,
        )
        await nursery.start(SignalingClient(config).run, ECHO, None)
        page = StatusPage(server, host=HOST, realms=REALMS, **options)  # type: ignore[arg-type]
        await nursery.start(page.run)
        yield server, page
        nursery.cancel_scope.cancel()


async def test_on_loopback_it_serves_the_page_and_every_realm_read_only() -> None:
    with trio.fail_after(30):
        async with page_with_a_node() as (_, page):
            answers = await fetch(
                page.url,
                ["/", "/status.js", "/status.css", "/api/realms", "/api/nodes?realm=alpha"],
            )
            [post] = await fetch(page.url, ["/api/nodes"], method="POST")
            [missing] = await fetch(page.url, ["/nothing"])
    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 200, 200, 200]
    html, js, _, realms, nodes = answers
    assert html[1]["content-type"].startswith("text/html")
    assert "script-src 'self'" in html[1]["content-security-policy"]
    assert html[1]["x-content-type-options"] == "nosniff"
    assert b"innerHTML" not in js[2]  # rows are built with textContent only
    assert json.loads(realms[2]) == {"realms": ["alpha"]}
    rows = json.loads(nodes[2])["nodes"]
    assert [(row["id"], row["handled"]) for row in rows] == [("acme:echo#1@alpha", None)]
    assert post[0] == 405
    assert missing[0] == 404


async def test_a_foreign_host_header_is_refused_on_loopback() -> None:
    # A web page elsewhere reaching 127.0.0.1 through DNS rebinding names its own host.
    with trio.fail_after(30):
        async with page_with_a_node() as (_, page):
            [answer] = await fetch(page.url, ["/api/nodes?realm=alpha"], host="evil.example:80")
            [local] = await fetch(page.url, ["/api/realms"], host="localhost")
    assert answer[0] == 403
    assert b"acme" not in answer[2]
    assert local[0] == 200


async def test_with_credentials_each_realm_sees_only_itself() -> None:
    with trio.fail_after(30):
        async with page_with_a_node(require_credentials=True) as (_, page):
            [anonymous] = await fetch(page.url, ["/api/nodes?realm=alpha"])
            [wrong] = await fetch(page.url, ["/"], auth=("alpha", REALMS["beta"]))
            alpha = await fetch(
                page.url, ["/api/realms", "/api/nodes?realm=alpha"], auth=("alpha", REALMS["alpha"])
            )
            [other] = await fetch(
                page.url, ["/api/nodes?realm=beta"], auth=("alpha", REALMS["alpha"])
            )
            beta = await fetch(
                page.url, ["/api/realms", "/api/nodes"], auth=("beta", REALMS["beta"])
            )
    assert anonymous[0] == 401
    assert anonymous[1]["www-authenticate"].startswith("Basic")
    assert wrong[0] == 401
    assert [status for status, _, _ in alpha] == [200, 200]
    assert json.loads(alpha[0][2]) == {"realms": ["alpha"]}
    assert len(json.loads(alpha[1][2])["nodes"]) == 1
    assert other[0] == 403
    assert json.loads(beta[0][2]) == {"realms": ["beta"]}
    assert json.loads(beta[1][2])["nodes"] == []


async def test_off_loopback_it_needs_realms() -> None:
    async with serve(host=HOST) as server:
        with pytest.raises(ConfigError, match="not loopback"):
            StatusPage(server, host="192.0.2.1")
        with pytest.raises(ConfigError, match="with credentials"):
            StatusPage(server, require_credentials=True)
        StatusPage(server, host="192.0.2.1", realms=REALMS)  # constructed, never bound
