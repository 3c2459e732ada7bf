"""Signaling over wss:// (the server proves its certificate) and the throttle on failed
authentications, with real servers and clients on 127.0.0.1 (and the CLI as a process).

The TLS material is made at test time (tlsfiles.py): a CA, a server certificate for 127.0.0.1
signed by it, and an unrelated CA. Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from tlsfiles import TlsFiles, write_tls_files

from actr_trio import ActrSystem, Workload
from actr_trio._config import Config
from actr_trio._ids import ActrType
from actr_trio.errors import AuthError, ConfigError, ServerCertificateError, SignalingError
from actr_trio.signaling import SignalingClient, serve
from actr_trio.signaling._cli import REALMS_ENV
from actr_trio.transport import LoopbackHub
from actr_trio.transport._abc import SignalingSession

pytestmark = pytest.mark.integration

ECHO = ActrType("acme", "echo")
HOST = "127.0.0.1"
SECRET = "tls-realm-secret-0123"
REALMS = {"alpha": SECRET}
LISTENING = "actr-trio signaling listening on "


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return write_tls_files(tmp_path)


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    return context


def config(url: str, secret: str = SECRET, **kw: object) -> Config:
    return Config(realm="alpha", signaling_url=url, realm_secret=secret, **kw)  # type: ignore[arg-type]


async def start_client(
    nursery: trio.Nursery, url: str, **kw: object
) -> tuple[SignalingClient, SignalingSession]:
    client = SignalingClient(config(url, **kw))
    session: SignalingSession = await nursery.start(client.run, ECHO, None)
    return client, session


# -- wss:// ----------------------------------------------------------------------------------------


async def test_a_node_trusting_the_servers_ca_registers_over_wss(tls: TlsFiles) -> None:
    with trio.fail_after(10):
        async with (
            serve(host=HOST, realms=REALMS, ssl_context=server_context(tls)) as server,
            trio.open_nursery() as nursery,
        ):
            assert server.url.startswith(f"wss://{HOST}:")
            _, session = await start_client(nursery, server.url, signaling_ca=tls.ca_cert)
            assert await session.discover(ECHO) == [session.actr_id]
            assert server.statistics().registered == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("trusted", ["system", "other-ca"])
async def test_a_server_certificate_the_node_cannot_verify_is_refused(
    tls: TlsFiles, caplog: pytest.LogCaptureFixture, trusted: str
) -> None:
    ca = None if trusted == "system" else tls.other_ca_cert
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS, ssl_context=server_context(tls)) as server:
            client = SignalingClient(config(server.url, signaling_ca=ca))
            async with trio.open_nursery() as nursery:
                with pytest.raises(ServerCertificateError) as info:
                    await nursery.start(client.run, ECHO, None)
            assert server.statistics().accepted == 0  # no WebSocket was ever opened
    message = str(info.value)
    assert message.startswith(f"signaling server {server.url}: TLS certificate verify failed (")
    assert "set Config.signaling_ca" in message
    assert isinstance(info.value, SignalingError)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TLS certificate verify failed" in r.getMessage() for r in warnings)


class Echo(Workload):
    actr_type = ECHO


async def test_a_node_start_raises_the_certificate_error_plainly(tls: TlsFiles) -> None:
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS, ssl_context=server_context(tls)) as server:
            system = ActrSystem(config(server.url), transport=LoopbackHub().transport())
            with pytest.raises(ServerCertificateError, match="TLS certificate verify failed"):
                async with system.attach(Echo()).start():
                    pytest.fail("the node must not start")  # pragma: no cover


async def test_a_wss_node_pointed_at_a_plain_server_fails_fast(tls: TlsFiles) -> None:
    # (The other way round, a ws:// node at a wss:// server, fails only after the connect
    # timeout: trio-websocket's client handshake does not notice the server closing.)
    with trio.fail_after(10):
        async with serve(host=HOST, realms=REALMS) as plain:
            tls_url = plain.url.replace("ws://", "wss://")
            client = SignalingClient(config(tls_url, signaling_ca=tls.ca_cert))
            async with trio.open_nursery() as nursery:
                with pytest.raises(SignalingError, match="TLS handshake with signaling server"):
                    await nursery.start(client.run, ECHO, None)


def test_a_ca_is_only_for_wss_and_must_load(tmp_path: Path, tls: TlsFiles) -> None:
    with pytest.raises(ConfigError, match=r"signaling_ca is set but .* is not wss://"):
        SignalingClient(config(f"ws://{HOST}:1", signaling_ca=tls.ca_cert))
    with pytest.raises(ConfigError, match="cannot be loaded as PEM CA certificates"):
        SignalingClient(config(f"wss://{HOST}:1", signaling_ca=tmp_path / "missing.pem"))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match="cannot be loaded as PEM CA certificates"):
        SignalingClient(config(f"wss://{HOST}:1", signaling_ca=not_pem))


async def test_the_cli_serves_wss_with_realms_from_the_environment(
    tmp_path: Path, tls: TlsFiles
) -> None:
    log = tmp_path / "signaling.log"
    with trio.fail_after(20):
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
                    "--tls-cert",
                    str(tls.server_cert),
                    "--tls-key",
                    str(tls.server_key),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr.fileno(),
                env={**os.environ, REALMS_ENV: f"alpha:{SECRET}"},
            )
        try:
            assert proc.stdout is not None
            buffer = b""
            while b"\n" not in buffer:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"signaling exited early: {await trio.Path(log).read_text()}"
                buffer += chunk
            line = buffer.decode().splitlines()[0]
            assert line.startswith(f"{LISTENING}wss://{HOST}:"), line
            url = line.removeprefix(LISTENING)
            async with trio.open_nursery() as nursery:
                _, session = await start_client(nursery, url, signaling_ca=tls.ca_cert)
                assert session.actr_id.realm == "alpha"
                with pytest.raises(AuthError):  # the realm's secret is what the env said
                    await start_client(nursery, url, signaling_ca=tls.ca_cert, secret="x" * 16)
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(5, shield=True):
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
    text = await trio.Path(log).read_text()
    assert SECRET not in text
    assert "deprecated" not in text


# -- failed authentications slow down ---------------------------------------------------------------


async def test_wrong_guesses_slow_down_and_an_honest_node_still_gets_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guesses = 3
    with trio.fail_after(20):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            for i in range(guesses):
                client = SignalingClient(config(server.url, secret=f"wrong-guess-{i:08}"))
                with pytest.raises(AuthError):
                    await nursery.start(client.run, ECHO, None)
            stats = server.statistics()
            assert stats.auth_failures == guesses
            # Every guess after the first waited for its turn (0.1 s, then 0.2 s).
            assert stats.auth_throttled == guesses - 1
            assert stats.auth_turned_away == 0
            # The honest node from the same address waits out the window (0.4 s), then is in.
            _, session = await start_client(nursery, server.url)
            assert await session.discover(ECHO) == [session.actr_id]
            stats = server.statistics()
            assert (stats.auth_failures, stats.auth_throttled) == (guesses, guesses)
            nursery.cancel_scope.cancel()
    refusals = [r for r in caplog.records if "refused: auth:" in r.getMessage()]
    # One WARNING line per address per interval, not one per guess.
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert f"from {HOST} refused: auth: wrong secret for realm 'alpha'" in refusals[0].getMessage()
    assert "wrong-guess" not in caplog.text
