"""``actr-trio inspect`` against a running realm: a real signaling server on 127.0.0.1, nodes
reporting in their heartbeats, and the command run as a process.

Bounded by ``trio.fail_after``; the waits poll what the server holds (reports arrive with
heartbeats every 0.1 s), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from actr_trio import ActrRef, ActrSystem, ActrType, Context, Workload, route
from actr_trio._config import Config
from actr_trio._heartbeat_report import HeartbeatReport
from actr_trio._ids import ActrId
from actr_trio.errors import AuthError, RemoteError, Retryable
from actr_trio.signaling import SignalingClient, SignalingServer, serve
from actr_trio.signaling._inspect import inspect_realm
from actr_trio.signaling._reports import NodeStatus
from actr_trio.transport import LoopbackHub

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
REALMS = {"alpha": "alpha-secret-16bytes", "beta": "beta-secret-16bytes"}
ECHO = ActrType("acme", "echo")
CALLER = ActrType("acme", "caller")


class Echo(Workload):
    actr_type = ECHO

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("demo.Echo.Poison")
    async def poison(self, request: bytes, ctx: Context) -> bytes:
        raise Retryable("always")


class Caller(Workload):
    actr_type = CALLER


def node_config(url: str, realm: str = "alpha") -> Config:
    return Config(
        realm=realm,
        signaling_url=url,
        realm_secret=REALMS[realm],
        heartbeat_interval=0.1,
        max_attempts=1,
    )


@asynccontextmanager
async def realm_nodes(url: str, *, direct: bool = True) -> AsyncIterator[tuple[ActrRef, ActrRef]]:
    """An echo node and a caller registered with the server at ``url``, in this process
    (``direct=False``: they talk over the loopback transport's lanes, not in process)."""
    hub = LoopbackHub()
    echo_system = ActrSystem(node_config(url), transport=hub.transport(), direct=direct)
    caller_system = ActrSystem(node_config(url), transport=hub.transport(), direct=direct)
    async with (
        echo_system.attach(Echo()).start() as echo,
        caller_system.attach(Caller()).start() as caller,
    ):
        yield echo, caller


async def wait_for_row(
    server: SignalingServer, realm: str, actr_id: ActrId, ready: Callable[[NodeStatus], bool]
) -> NodeStatus:
    """Poll the server until ``actr_id``'s row satisfies ``ready`` (the caller bounds it)."""
    while True:
        for row in server.inspect(realm):
            if row.actr_id == actr_id and ready(row):
                return row
        await trio.sleep(0.05)


async def until(ready: Callable[[], bool]) -> None:
    """Poll ``ready`` (state in a server with sockets in flight); the caller bounds it."""
    while True:
        if ready():
            return
        await trio.sleep(0.05)


def _handled(row: NodeStatus, at_least: int) -> bool:
    return row.report is not None and row.report.handled >= at_least


async def run_inspect(url: str, *args: str, secret: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ACTR_REALM_SECRET": secret}
    argv = [sys.executable, "-m", "actr_trio.cli", "inspect", url, *args]
    return await trio.run_process(
        argv, env=env, capture_stdout=True, capture_stderr=True, check=False
    )


async def test_inspect_json_lists_a_running_realm_with_what_its_nodes_report() -> None:
    with trio.fail_after(60):
        async with serve(host=HOST, realms=REALMS) as server, realm_nodes(server.url) as nodes:
            echo, caller = nodes
            for i in range(3):
                assert await caller.call(echo.actr_id, "demo.Echo.Echo", b"%d" % i) == b"%d" % i
            with pytest.raises(RemoteError):
                await caller.call(echo.actr_id, "demo.Echo.Poison", b"p")
            await wait_for_row(
                server,
                "alpha",
                echo.actr_id,
                lambda row: (
                    _handled(row, 3) and row.report is not None and row.report.dead_letters == 1
                ),
            )
            done = await run_inspect(
                server.url, "--realm", "alpha", "--json", secret=REALMS["alpha"]
            )
            assert done.returncode == 0, done.stderr.decode()
            table = await run_inspect(server.url, "--realm", "alpha", secret=REALMS["alpha"])
    answer = json.loads(done.stdout)
    assert answer["realm"] == "alpha"
    rows = {row["id"]: row for row in answer["nodes"]}
    assert set(rows) == {str(echo.actr_id), str(caller.actr_id)}
    row = rows[str(echo.actr_id)]
    assert row["type"] == "acme:echo"
    assert row["handled"] >= 3
    assert row["dead_letters"] == 1
    assert row["recent_dead_letters"] == ["demo.Echo.Poison"]
    assert row["backlog"] == {"HIGH": 0, "NORMAL": 0, "LOW": 0}
    assert row["pending"] == 0
    assert 0 <= row["heartbeat_age"] < 5
    assert abs(row["since"] - time.time()) < 60
    assert rows[str(caller.actr_id)]["handled"] == 0
    # The table: a header and one line per node.
    assert table.returncode == 0, table.stderr.decode()
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == [
        "TYPE",
        "ID",
        "SINCE",
        "HEARTBEAT",
        "BACKLOG",
        "HANDLED",
        "HANDLED/S",
    ]
    assert len(lines) == 3
    assert any(str(echo.actr_id) in line for line in lines[1:])


async def test_inspect_needs_the_realm_secret_and_sees_only_that_realm() -> None:
    with trio.fail_after(60):
        async with serve(host=HOST, realms=REALMS) as server, realm_nodes(server.url) as nodes:
            echo, _ = nodes
            await wait_for_row(server, "alpha", echo.actr_id, lambda row: row.report is not None)
            wrong = await run_inspect(server.url, "--realm", "alpha", secret=REALMS["beta"])
            with pytest.raises(AuthError):
                await inspect_realm(server.url, "alpha", None)
            beta = await inspect_realm(server.url, "beta", REALMS["beta"])
    assert wrong.returncode == 1
    assert b"refused the realm secret" in wrong.stderr
    assert wrong.stdout == b""
    assert beta == []  # alpha's nodes are not beta's to see


async def test_out_of_range_reports_are_ignored_by_the_server() -> None:
    hostile = HeartbeatReport(backlog=(2**41, 0, 0), handled=1, accepted=1)

    async def lie() -> HeartbeatReport:
        return hostile

    with trio.fail_after(30):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            client = SignalingClient(node_config(server.url))
            client.report_with(lie)
            session = await nursery.start(client.run, ECHO, None)
            await until(lambda: server.statistics().reports_refused >= 2)
            [row] = server.inspect("alpha")
            assert row.actr_id == session.actr_id  # still registered and present
            assert row.report is None  # nothing it said was kept
            assert row.heartbeat_age < 5
            nursery.cancel_scope.cancel()
