"""Identity that cannot be taken (issue 12): node keys, bound ActrIds, server-assigned serials,
credentials and issuer pinning, against a real signaling server on 127.0.0.1.

The takeover tests run the signaling server and the nodes as real processes; the others embed
the server (``serve``) and drive ``SignalingClient`` or hand-made frames. Synchronisation is by
what the processes print and by events, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from netprocs import HERE, read_line_matching

from actr_trio import ActrSystem, ActrType, Workload
from actr_trio._config import Config
from actr_trio._identity import (
    ISSUER_PUB_FILE,
    NODE_KEY_FILE,
    IssuerKey,
    NodeKey,
    key_id,
    verify_credential,
)
from actr_trio._ids import ActrId
from actr_trio.errors import AuthError, IdentityTaken, IssuerKeyMismatch
from actr_trio.signaling import SignalingClient, serve
from actr_trio.signaling._cli import REALMS_ENV
from actr_trio.signaling._server import ISSUER_KEY_SUFFIX
from actr_trio.testing import LocalRealm, network_config

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SECRET = "itest-secret-0123456789"
REALMS = {"itest": SECRET}
ECHO = ActrType("acme", "echo")
ID_NODE = ActrType("itest", "id")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- real processes ---------------------------------------------------------------------------


@asynccontextmanager
async def process(
    argv: list[str], log: Path, environ: Mapping[str, str]
) -> AsyncIterator[trio.Process]:
    """``argv`` as a process (stdout piped, stderr to ``log``), killed at the end."""
    async with await trio.open_file(log, "ab") as stderr:
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=stderr.fileno(), env={**os.environ, **environ}
        )
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def signaling_process(tmp_path: Path) -> AsyncIterator[tuple[str, str, Path]]:
    """``actr-trio signaling`` with realm ``itest`` (secret from the environment) and a
    database; yields its URL, the issuer key it printed (hex) and its log file."""
    log = tmp_path / "signaling.log"
    argv = [
        sys.executable, "-m", "actr_trio.cli", "signaling", "--host", HOST, "--port", "0",
        "--db", str(tmp_path / "signaling.db"),
    ]  # fmt: skip
    async with process(argv, log, {REALMS_ENV: f"itest:{SECRET}"}) as proc:
        with trio.fail_after(30):
            listening, issuer = await read_lines(proc, 2)
        assert " listening on " in listening, listening
        # "actr-trio signaling issuer key HEX (key id ID)"
        yield listening.rsplit(" ", 1)[-1], issuer.split(" issuer key ")[1].split()[0], log


async def read_lines(proc: trio.Process, count: int) -> list[str]:
    """The first ``count`` stdout lines of ``proc``."""
    assert proc.stdout is not None
    buffer = b""
    while buffer.count(b"\n") < count:
        data = await proc.stdout.receive_some()
        assert data, "the process closed its stdout"
        buffer += data
    return buffer.decode().splitlines()[:count]


def idnode_argv(name: str, url: str, data_dir: Path) -> list[str]:
    return [
        sys.executable, str(HERE / "idnode.py"), name, "--signaling", url,
        "--data-dir", str(data_dir),
    ]  # fmt: skip


@asynccontextmanager
async def idnode(
    name: str, url: str, data_dir: Path, log: Path, *, secret: str = SECRET
) -> AsyncIterator[tuple[trio.Process, str]]:
    """An ``idnode.py`` process; yields it and its first line (``registered ...`` or
    ``failed ...``)."""
    argv = idnode_argv(name, url, data_dir)
    async with process(argv, log, {"ACTR_REALM_SECRET": secret}) as proc:
        with trio.fail_after(60):
            line = await read_line_matching(
                proc, lambda t: t.split()[0] in ("registered", "failed")
            )
        yield proc, line


class Here(Workload):
    actr_type = ActrType("itest", "here")


async def call_name(url: str, target: ActrId) -> bytes:
    """Call ``target``'s ``id.Node.Name`` from a node in this process (real WebRTC)."""
    config = network_config(url, realm="itest", realm_secret=SECRET)
    with trio.fail_after(60):
        async with ActrSystem(config).attach(Here()).start() as here:
            assert await here.discover(ID_NODE) == [target]
            return await here.call(target, "id.Node.Name", b"")


async def test_takeover_without_the_node_key_fails_and_the_real_node_keeps_its_identity(
    tmp_path: Path,
) -> None:
    honest_dir, thief_dir = tmp_path / "honest", tmp_path / "thief"
    async with signaling_process(tmp_path) as (url, issuer_hex, server_log):
        async with idnode("honest", url, honest_dir, tmp_path / "honest.log") as (honest, line):
            _, honest_id, honest_key = line.split()
            actr_id = ActrId.parse(honest_id)
            # The node's key and files: private, kept beside its identity.
            assert mode(honest_dir) == 0o700
            assert mode(honest_dir / NODE_KEY_FILE) == 0o600
            assert (honest_dir / ISSUER_PUB_FILE).read_text().strip() == issuer_hex

            # The attacker is a realm member: it knows the secret and the id (discovery) and
            # writes the id into its own identity.json. It has no node key of the victim's.
            thief_dir.mkdir(mode=0o700)
            shutil.copy(honest_dir / "identity.json", thief_dir / "identity.json")
            async with idnode("thief", url, thief_dir, tmp_path / "thief.log") as (thief, line):
                assert line.startswith("failed IdentityTaken: ")
                assert f"{actr_id} is bound to another node key" in line
                assert "remove identity.json" in line
                assert await thief.wait() == 3
            # Without the realm secret it does not even get that far.
            wrong = "not-the-secret-0123456789"
            async with idnode("thief2", url, thief_dir, tmp_path / "thief2.log", secret=wrong) as (
                thief,
                line,
            ):
                assert line.startswith("failed AuthError: ")
                assert await thief.wait() == 3

            server_says = server_log.read_text()
            assert "WARNING actr_trio.signaling: signaling connection" in server_says
            assert f"refused: identity: {actr_id} is bound to another node key" in server_says
            assert "refused: auth: wrong secret for realm 'itest'" in server_says

            # The honest node was not disconnected: it keeps its id and answers its callers.
            assert honest.returncode is None
            assert await call_name(url, actr_id) == b"honest"

            # It crashes: the server still holds its session (stale until the presence timeout).
            honest.kill()
            await honest.wait()
        await refused_thief(url, thief_dir, tmp_path / "thief.log", actr_id)

        # Restarted with its data_dir, the honest node gets its id back (same key), taking over
        # its own stale session; then it stops cleanly and unregisters.
        async with idnode("honest", url, honest_dir, tmp_path / "honest.log") as (_, line):
            assert line == f"registered {actr_id} {honest_key}"
            assert await call_name(url, actr_id) == b"honest"
        # Gone, the id is only in the server's database: still bound to the honest key.
        await refused_thief(url, thief_dir, tmp_path / "thief.log", actr_id)


async def refused_thief(url: str, thief_dir: Path, log: Path, actr_id: ActrId) -> None:
    async with idnode("thief", url, thief_dir, log) as (thief, line):
        assert line.startswith(f"failed IdentityTaken: {actr_id} is bound to another node key")
        assert await thief.wait() == 3


async def test_print_issuer_key_matches_what_the_server_uses(tmp_path: Path) -> None:
    db = tmp_path / "signaling.db"
    printed = await trio.run_process(
        [sys.executable, "-m", "actr_trio.cli", "signaling", "--db", str(db), "--print-issuer-key"],
        capture_stdout=True,
        capture_stderr=True,
    )
    key_file = Path(f"{db}{ISSUER_KEY_SUFFIX}")
    assert mode(key_file) == 0o600
    hex_key = printed.stdout.decode().strip()
    assert hex_key == IssuerKey.load_or_create(key_file).public_bytes().hex()
    async with signaling_process(tmp_path) as (_, issuer_hex, _):
        assert issuer_hex == hex_key  # the same file, so nodes' trust_anchor stays valid


# -- serials the server never assigned ---------------------------------------------------------


def config(url: str, **kw: object) -> Config:
    return Config(realm="itest", signaling_url=url, realm_secret=SECRET, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("serial", "why"),
    [
        (2**63 - 1, "was never assigned"),  # made SQLite raise OverflowError, blocking the realm
        (2**64 - 1, "out of range"),
        (2**63, "out of range"),
        (0, "out of range"),
        (7, "was never assigned"),
    ],
    ids=["2^63-1", "2^64-1", "2^63", "zero", "never-assigned"],
)
async def test_serials_the_server_never_assigned_are_refused_and_the_realm_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, serial: int, why: str
) -> None:
    with trio.fail_after(20):
        async with (
            serve(host=HOST, realms=REALMS, db_path=tmp_path / "s.db") as server,
            trio.open_nursery() as nursery,
        ):
            first = SignalingClient(config(server.url))
            first_session = await nursery.start(first.run, ECHO, None)
            forged = ActrId("itest", serial, ECHO)
            with pytest.raises(IdentityTaken, match=why):
                await nursery.start(SignalingClient(config(server.url)).run, ECHO, forged)
            # The realm keeps registering, with the next serial, and discovery works.
            later = SignalingClient(config(server.url))
            later_session = await nursery.start(later.run, ECHO, None)
            assert later_session.actr_id.serial == first_session.actr_id.serial + 1
            assert await later_session.discover(ECHO) == sorted(
                [first_session.actr_id, later_session.actr_id]
            )
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused: identity: " in w and why in w for w in warnings), warnings


# -- credentials and the issuer key ---------------------------------------------------------------


async def test_credentials_are_issued_verified_and_renewed(tmp_path: Path) -> None:
    key = NodeKey.generate()
    with trio.fail_after(20):
        async with (
            serve(
                host=HOST, realms=REALMS, presence_timeout=0.3, credential_lifetime=1.0
            ) as server,
            trio.open_nursery() as nursery,
        ):
            client = SignalingClient(config(server.url, heartbeat_interval=0.05))
            session = await nursery.start(client.run, ECHO, None, key)
            assert session.issuer_key == server.issuer_public_key
            assert session.node_key is key
            first = verify_credential(session.credential, session.issuer_key, now=time.time())
            assert (first.actr_id, first.public_key) == (session.actr_id, key.public_bytes())
            assert first.lifetime == 1
            await client.wait_renewals(1)
            renewed = verify_credential(session.credential, session.issuer_key, now=time.time())
            assert (renewed.actr_id, renewed.public_key) == (first.actr_id, first.public_key)
            assert client.statistics().renewals >= 1
            nursery.cancel_scope.cancel()


async def test_the_issuer_is_pinned_on_first_use_and_a_changed_one_refused(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    with trio.fail_after(20):
        async with (
            serve(host=HOST, realms=REALMS, db_path=tmp_path / "a.db") as first,
            trio.open_nursery() as nursery,
        ):
            client = SignalingClient(config(first.url, data_dir=data_dir))
            await nursery.start(client.run, ECHO, None)
            nursery.cancel_scope.cancel()
        pinned = data_dir / ISSUER_PUB_FILE
        assert pinned.read_text().strip() == first.issuer_public_key.hex()
        assert mode(pinned) == 0o600
        # Another server (another database, so another issuer key) at the same URL or not.
        async with (
            serve(host=HOST, realms=REALMS, db_path=tmp_path / "b.db") as second,
            trio.open_nursery() as nursery,
        ):
            client = SignalingClient(config(second.url, data_dir=data_dir))
            with pytest.raises(IssuerKeyMismatch) as info:
                await nursery.start(client.run, ECHO, None)
            assert second.statistics().registered == 0
    message = str(info.value)
    assert key_id(first.issuer_public_key) in message
    assert key_id(second.issuer_public_key) in message
    assert str(pinned) in message
    assert "delete it to re-pin" in message
    assert second.issuer_public_key.hex() in message  # what to set to trust it on purpose
    assert isinstance(info.value, AuthError)


async def test_trust_anchor_is_required_of_the_server(tmp_path: Path) -> None:
    other = IssuerKey.generate()
    data_dir = tmp_path / "node"
    with trio.fail_after(20):
        async with serve(host=HOST, realms=REALMS) as server, trio.open_nursery() as nursery:
            wrong = SignalingClient(config(server.url, trust_anchor=other.public_bytes().hex()))
            with pytest.raises(IssuerKeyMismatch, match=r"\(Config\.trust_anchor\)"):
                await nursery.start(wrong.run, ECHO, None)
            anchor = server.issuer_public_key.hex()
            right = SignalingClient(config(server.url, trust_anchor=anchor, data_dir=data_dir))
            session = await nursery.start(right.run, ECHO, None)
            assert session.issuer_key == server.issuer_public_key
            nursery.cancel_scope.cancel()
    # With an anchor nothing is pinned on first use.
    assert not (data_dir / ISSUER_PUB_FILE).exists()


async def test_the_servers_issuer_key_file_is_private_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "signaling.db"
    with trio.fail_after(20):
        async with serve(host=HOST, db_path=db) as server:
            first = server.issuer_public_key
        key_file = Path(f"{db}{ISSUER_KEY_SUFFIX}")
        assert mode(key_file) == 0o600
        async with serve(host=HOST, db_path=db) as server:
            assert server.issuer_public_key == first


async def test_a_local_node_keeps_its_key_and_id_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"

    class Echo(Workload):
        actr_type = ECHO

    async with LocalRealm() as realm:
        async with realm.start(Echo(), data_dir=data_dir) as ref:
            first_id = ref.actr_id
        key = (data_dir / NODE_KEY_FILE).read_bytes()
        assert mode(data_dir) == 0o700
        assert mode(data_dir / NODE_KEY_FILE) == 0o600
        async with realm.start(Echo(), data_dir=data_dir) as ref:
            assert ref.actr_id == first_id
        assert (data_dir / NODE_KEY_FILE).read_bytes() == key
        # Another key cannot have that id, in memory as over the network.
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        shutil.copy(data_dir / "identity.json", other / "identity.json")
        with pytest.raises(IdentityTaken):
            async with realm.start(Echo(), data_dir=other):
                pytest.fail("the node must not start")  # pragma: no cover
