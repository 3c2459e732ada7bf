"""The signaling server and client over real WebSockets on 127.0.0.1 (and the CLI as a process).

Every test is bounded by ``trio.fail_after``; synchronisation is by events and observable state
(frames arriving, ``wait_registrations``, a process printing its address), never by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from actr_trio import ActrSystem, Workload
from actr_trio._config import Config
from actr_trio._identity import NodeKey
from actr_trio._ids import ActrId, ActrType
from actr_trio.errors import AuthError, PeerUnavailable, SessionTakenOver, SignalingError
from actr_trio.signaling import SignalingClient, SignalingServer, serve
from actr_trio.signaling._cli import REALMS_ENV
from actr_trio.signaling._client_protocol import (
    ClientProtocol,
    Outgoing,
    Registered,
)
from actr_trio.signaling._protocol import (
    Frame,
    decode_frame,
    encode_frame,
)
from actr_trio.transport import LoopbackHub
from actr_trio.transport._abc import Relay, SignalingSession

pytestmark = pytest.mark.integration

ECHO = ActrType("acme", "echo")
CALLER = ActrType("acme", "caller")
HOST = "127.0.0.1"
REALMS = {"alpha": "alpha-secret-16bytes", "beta": "beta-secret-16bytes"}
LISTENING = "actr-trio signaling listening on "


def config(
    url: str, realm: str = "alpha", secret: str | None = "alpha-secret-16bytes", **kw: object
) -> Config:
    return Config(realm=realm, signaling_url=url, realm_secret=secret, **kw)  # type: ignore[arg-type]


async def start_client(
    nursery: trio.Nursery,
    url: str,
    actr_type: ActrType = ECHO,
    previous_id: ActrId | None = None,
    node_key: NodeKey | None = None,
    **kw: object,
) -> tuple[SignalingClient, SignalingSession]:
    client = SignalingClient(config(url, **kw))  # type: ignore[arg-type]
    session: SignalingSession = await nursery.start(client.run, actr_type, previous_id, node_key)
    return client, session


@asynccontextmanager
async def raw_websocket(url: str) -> AsyncIterator[WebSocketConnection]:
    """A bare client WebSocket whose TCP socket is always closed.

    (trio_websocket.open_websocket_url leaks the client socket when the server closes first.)
    """
    port = int(url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream(HOST, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"{HOST}:{port}", "/")
            try:
                yield ws
            finally:
                with trio.move_on_after(1, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


@asynccontextmanager
async def raw_registered(
    url: str, actr_type: ActrType = ECHO, realm: str = "alpha", secret: str = "alpha-secret-16bytes"
) -> AsyncIterator[tuple[WebSocketConnection, ActrId]]:
    """A hand-driven connection that registers and then does only what the test does."""
    async with raw_websocket(url) as ws:
        protocol = ClientProtocol(realm=realm, secret=secret, actr_type=actr_type, previous_id=None)
        await ws.send_message(encode_frame(protocol.hello()))
        registered = None
        while registered is None:
            for event in protocol.receive(await ws.get_message()):
                if isinstance(event, Outgoing):
                    await ws.send_message(encode_frame(event.frame))
                elif isinstance(event, Registered):
                    registered = event.actr_id
        yield ws, registered


# -- happy path -----------------------------------------------------------------------------------


async def test_register_discover_relay_and_unregister() -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            assert server.url.startswith(f"ws://{HOST}:")
            _, echo = await start_client(nursery, server.url, ECHO)
            caller_client, caller = await start_client(nursery, server.url, CALLER)
            assert echo.actr_id.realm == "alpha"
            assert echo.actr_id != caller.actr_id
            assert await caller.discover(ECHO) == [echo.actr_id]

            await caller.send_relay(echo.actr_id, "offer", "v=0 sdp")
            assert await echo.relays.receive() == Relay(
                caller.actr_id, echo.actr_id, "offer", "v=0 sdp"
            )
            assert caller_client.statistics().registrations == 1
            assert server.statistics().registered == 2

            # Cancelling a client unregisters it before run() returns.
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    _, leaving = await start_client(inner, server.url, ECHO)
                    assert sorted(await caller.discover(ECHO)) == sorted(
                        [echo.actr_id, leaving.actr_id]
                    )
                    scope.cancel()
            assert await caller.discover(ECHO) == [echo.actr_id]
            nursery.cancel_scope.cancel()


async def test_takeover_with_previous_id_closes_the_old_session() -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            old_client = SignalingClient(config(server.url))
            key = NodeKey.generate()  # the same node, restarted: the same key
            taken_over = trio.Event()
            new_sessions: list[SignalingSession] = []

            async def take_over(previous_id: ActrId) -> None:
                _, new = await start_client(
                    nursery, server.url, ECHO, previous_id=previous_id, node_key=key
                )
                new_sessions.append(new)
                taken_over.set()

            # The old session ends with SessionTakenOver (it must not take the id back).
            with pytest.RaisesGroup(SessionTakenOver):
                async with trio.open_nursery() as old_nursery:
                    old: SignalingSession = await old_nursery.start(old_client.run, ECHO, None, key)
                    nursery.start_soon(take_over, old.actr_id)
            await taken_over.wait()
            (new,) = new_sessions
            assert new.actr_id == old.actr_id
            assert await new.discover(ECHO) == [new.actr_id]
            assert server.statistics().registered == 1
            nursery.cancel_scope.cancel()


# -- authentication -------------------------------------------------------------------------------


REFUSED = "the signaling server rejected this node's secret"
UNSET = r"requires a secret: set Config\.realm_secret \(or ACTR_REALM_SECRET\)"


@pytest.mark.parametrize(
    ("realm", "secret", "match"),
    [
        ("alpha", "wrong-secret-16bytes", REFUSED),
        ("gamma", "alpha-secret-16bytes", REFUSED),
        ("alpha", None, UNSET),
        ("beta", "alpha-secret-16bytes", REFUSED),
    ],
    ids=["wrong-secret", "unknown-realm", "no-secret", "other-realms-secret"],
)
async def test_bad_credentials_raise_auth_error(realm: str, secret: str | None, match: str) -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server:
            async with trio.open_nursery() as nursery:
                client = SignalingClient(config(server.url, realm=realm, secret=secret))
                with pytest.raises(AuthError, match=match):
                    await nursery.start(client.run, ECHO, None)
            assert server.statistics().registered == 0


class Echo(Workload):
    actr_type = ECHO


@pytest.mark.parametrize(
    ("realm", "secret", "message", "logged"),
    [
        ("kvsec", None, f"realm 'kvsec' {UNSET}", None),
        (
            "kvsec",
            "wrong-secret-16bytes",
            f"realm 'kvsec': {REFUSED}",
            "auth: wrong secret for realm 'kvsec'",
        ),
        (
            "other",
            "kvsec-secret-16bytes",
            f"realm 'other': {REFUSED}",
            "auth: unknown realm 'other'",
        ),
    ],
    ids=["secret-unset", "secret-rejected", "unknown-realm"],
)
async def test_a_node_whose_credentials_fail_raises_a_plain_auth_error_saying_why(
    caplog: pytest.LogCaptureFixture,
    realm: str,
    secret: str | None,
    message: str,
    logged: str | None,
) -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms={"kvsec": "kvsec-secret-16bytes"}) as server:
            node_config = config(server.url, realm=realm, secret=secret)
            system = ActrSystem(node_config, transport=LoopbackHub().transport())
            # A plain except clause catches it: no exception group around a lone failure.
            with pytest.raises(AuthError, match=f"^{message}"):
                async with system.attach(Echo()).start():
                    pytest.fail("the node must not start")  # pragma: no cover
    refusals = [r.getMessage() for r in caplog.records if "refused: auth:" in r.getMessage()]
    if logged is None:
        assert refusals == []  # the node never sent a proof
    else:
        assert len(refusals) == 1
        assert logged in refusals[0]


async def test_open_server_admits_any_realm_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with serve(host=HOST) as server, trio.open_nursery() as nursery:
            _, session = await start_client(nursery, server.url, realm="anything", secret=None)
            assert session.actr_id.realm == "anything"
            nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "ANY realm" in r.message]
    assert len(warnings) == 1


async def test_first_connection_failure_raises_signaling_error() -> None:
    with trio.fail_after(10):
        # A port that was just free: nothing listens on it.
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        port = listeners[0].socket.getsockname()[1]
        for listener in listeners:
            await listener.aclose()
        async with trio.open_nursery() as nursery:
            client = SignalingClient(config(f"ws://{HOST}:{port}"))
            with pytest.raises(SignalingError, match="cannot register"):
                await nursery.start(client.run, ECHO, None)


# -- realm isolation ------------------------------------------------------------------------------


async def test_discovery_across_realms_sees_nothing() -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            _, alpha_echo = await start_client(nursery, server.url, ECHO)
            _, beta_caller = await start_client(
                nursery, server.url, CALLER, realm="beta", secret="beta-secret-16bytes"
            )
            _, alpha_caller = await start_client(nursery, server.url, CALLER)
            assert await beta_caller.discover(ECHO) == []
            assert await beta_caller.discover(CALLER) == [beta_caller.actr_id]
            assert await alpha_caller.discover(ECHO) == [alpha_echo.actr_id]
            assert await alpha_caller.discover(CALLER) == [alpha_caller.actr_id]
            nursery.cancel_scope.cancel()


async def test_relay_to_another_realm_is_refused() -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            _, alpha = await start_client(nursery, server.url, ECHO)
            _, alpha_peer = await start_client(nursery, server.url, CALLER)
            _, beta = await start_client(
                nursery, server.url, CALLER, realm="beta", secret="beta-secret-16bytes"
            )
            with pytest.raises(PeerUnavailable):
                await beta.send_relay(alpha.actr_id, "offer", "from beta")
            with pytest.raises(PeerUnavailable):
                await beta.send_relay(ActrId("beta", 999, ECHO), "ice", "nobody")
            # Relays within the realm still flow, and the refused one never arrived before them.
            await alpha_peer.send_relay(alpha.actr_id, "ice", "from alpha")
            relay = await alpha.relays.receive()
            assert relay.payload == "from alpha"
            with pytest.raises(trio.WouldBlock):
                alpha.relays.receive_nowait()  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()


# -- presence -------------------------------------------------------------------------------------


async def test_silent_node_disappears_from_discovery() -> None:
    presence_timeout = 0.5
    with trio.fail_after(10):
        async with (
            serve(host=HOST, realms=REALMS, presence_timeout=presence_timeout) as server,
            trio.open_nursery() as nursery,
        ):
            # The real client heartbeats (within presence_timeout / 3, whatever its config says).
            _, live = await start_client(nursery, server.url, CALLER, heartbeat_interval=60)
            async with raw_registered(server.url, ECHO) as (ws, silent_id):
                assert await live.discover(ECHO) == [silent_id]
                # Silent past presence_timeout: the server says so and closes the connection.
                error = decode_frame(await ws.get_message()).error
                assert error.code == "presence_timeout"
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            assert await live.discover(ECHO) == []
            # The heartbeating client outlived several presence timeouts and is still there.
            assert await live.discover(CALLER) == [live.actr_id]
            nursery.cancel_scope.cancel()


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\xfd garbage", "a text frame", b"\x0a" + b"\xff" * 70_000],
    ids=["undecodable", "text", "oversized"],
)
async def test_bad_frames_get_an_error_and_close_while_others_are_served(
    garbage: bytes | str,
) -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            _, session = await start_client(nursery, server.url, ECHO)
            for registered_first in (False, True):
                if registered_first:
                    async with raw_registered(server.url, CALLER) as (ws, _):
                        await ws.send_message(garbage)
                        assert decode_frame(await ws.get_message()).error.code == "bad_frame"
                        with pytest.raises(ConnectionClosed):
                            await ws.get_message()
                else:
                    async with raw_websocket(server.url) as ws:
                        await ws.send_message(garbage)
                        assert decode_frame(await ws.get_message()).error.code == "bad_frame"
                        with pytest.raises(ConnectionClosed):
                            await ws.get_message()
            assert await session.discover(ECHO) == [session.actr_id]
            assert await session.discover(CALLER) == []
            assert server.statistics().rejected_frames == 2
            nursery.cancel_scope.cancel()


async def test_out_of_order_frame_is_a_protocol_error() -> None:
    with trio.fail_after(10):
        async with serve(host=HOST) as server, raw_websocket(server.url) as ws:
            await ws.send_message(encode_frame(Frame(heartbeat=Frame.Heartbeat())))
            assert decode_frame(await ws.get_message()).error.code == "protocol"
            with pytest.raises(ConnectionClosed):
                await ws.get_message()


# -- reconnection ---------------------------------------------------------------------------------


async def test_client_reconnects_to_a_restarted_embedded_server(tmp_path: Path) -> None:
    # The server keeps its database (bindings, serials) and so its issuer key across the
    # restart: an in-memory server could not give the node its id back, nor prove itself.
    db = tmp_path / "signaling.db"
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as first_server:
                server = SignalingServer(host=HOST, port=0, realms=REALMS, db_path=db)
                await first_server.start(server.run)
                client, session = await start_client(nursery, server.url, ECHO)
                first_server.cancel_scope.cancel()
            # While the server is away, requests fail with SignalingError (at once when the
            # client already noticed, or when the dropped connection is noticed).
            with pytest.raises(SignalingError):
                await session.discover(ECHO)
            port = int(server.url.rsplit(":", 1)[1])
            restarted = SignalingServer(host=HOST, port=port, realms=REALMS, db_path=db)
            await nursery.start(restarted.run)
            await client.wait_registrations(2)
            assert client.statistics().actr_id == session.actr_id
            assert await session.discover(ECHO) == [session.actr_id]
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def signaling_process(
    port: int, db: Path, log: Path, *extra: str, environ: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[trio.Process, str]]:
    """``actr-trio signaling`` as a real process (``environ`` added to this process's
    environment); yields it and the URL it printed."""
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
                str(port),
                "--db",
                str(db),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr.fileno(),
            env={**os.environ, **(environ or {})},
        )
    try:
        assert proc.stdout is not None
        buffer = b""
        while b"\n" not in buffer:
            chunk = await proc.stdout.receive_some()
            assert chunk, f"signaling exited early: {await trio.Path(log).read_text()}"
            buffer += chunk
        line = buffer.decode().splitlines()[0]
        assert line.startswith(LISTENING), line
        yield proc, line.removeprefix(LISTENING)
    finally:
        with trio.move_on_after(5, shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "sigterm"])
async def test_server_process_restart_client_reregisters_with_same_id(
    tmp_path: Path, stop: signal.Signals
) -> None:
    db = tmp_path / "signaling.db"
    log = tmp_path / "signaling.log"
    # Secrets from the environment: never on the command line, where `ps` shows them.
    realms = {REALMS_ENV: "alpha:alpha-secret-16bytes"}
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            async with signaling_process(0, db, log, environ=realms) as (proc, url):
                port = int(url.rsplit(":", 1)[1])
                assert url == f"ws://{HOST}:{port}"
                client, session = await start_client(nursery, url, ECHO)
                _, other = await start_client(nursery, url, CALLER)
                first_id = session.actr_id
                # A node that registers and leaves for good: only the database remembers that
                # its serial was taken.
                with trio.CancelScope() as gone_scope:
                    async with trio.open_nursery() as gone_nursery:
                        _, gone = await start_client(gone_nursery, url, CALLER)
                        gone_scope.cancel()
                proc.send_signal(stop)
                # SIGTERM stops cleanly (exit 0); SIGKILL is a crash: what was committed stays.
                assert await proc.wait() == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
            assert (
                "WARNING" not in await trio.Path(log).read_text()
            )  # realms given: no open-server warning

            async with signaling_process(port, db, log, environ=realms) as (proc, url2):
                assert url2 == url
                await client.wait_registrations(2)
                assert client.statistics().actr_id == first_id
                assert session.actr_id == first_id
                # Serials survive the restart: a newcomer gets a serial never used before.
                _, newcomer = await start_client(nursery, url, CALLER)
                assert newcomer.actr_id.serial > gone.actr_id.serial > other.actr_id.serial
                assert await newcomer.discover(ECHO) == [first_id]
                proc.send_signal(signal.SIGINT)
                assert await proc.wait() == 0
                nursery.cancel_scope.cancel()
