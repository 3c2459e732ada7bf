"""Errors people can catch: one failure comes out of ``start()``, ``call``/``tell`` and the CLI as
its own typed exception (never wrapped in a group); ``@route`` refuses a plain ``def``; a second
node on a ``data_dir`` gets one line naming the holder's pid."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import trio

from actr_trio import ActrId, ActrSystem, ActrType, Context, Workload, route
from actr_trio import cli as actr_cli
from actr_trio._datadir import LOCK_FILE
from actr_trio._groups import reraise, sole_exception
from actr_trio.errors import (
    AuthError,
    ConfigError,
    DataDirInUse,
    PeerUnavailable,
    RouteNotFound,
    SignalingError,
)
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import LoopbackTransport, SignalingSession

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class RefusingConnector:
    """A signaling connector whose registration fails with ``error`` (raised from ``cause``)."""

    def __init__(self, error: Exception, cause: Exception) -> None:
        self.error = error
        self.cause = cause

    async def run(
        self,
        actr_type: ActrType,
        previous: ActrId | None,
        node_key: object = None,
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        raise self.error from self.cause


class CrashOnStop(TransportWrapper):
    """A loopback transport that fails when it is stopped (a second failure at shutdown)."""

    async def run(self, session: SignalingSession, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run, session)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                nursery.cancel_scope.cancel()
                raise OSError("transport failed while stopping")


class CrashNow(TransportWrapper):
    """A loopback transport that crashes once ``crash`` is set."""

    def __init__(self, inner: LoopbackTransport) -> None:
        super().__init__(inner)
        self.crash = trio.Event()

    async def run(self, session: SignalingSession, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run, session)
            task_status.started()
            await self.crash.wait()
            raise OSError("transport crashed")


def refusing_node(realm: LocalRealm, error: Exception, cause: Exception, **options: object):  # type: ignore[no-untyped-def]
    system = ActrSystem(
        realm.config(**options),
        transport=realm.hub.transport(),
        signaling=RefusingConnector(error, cause),  # type: ignore[arg-type]
    )
    return system.attach(Echo())


# -- start(): one failure, as itself -------------------------------------------------------------


@pytest.mark.parametrize("error", [AuthError("realm 'x' refused"), SignalingError("unreachable")])
async def test_a_start_failure_is_raised_plain_with_its_cause(error: Exception) -> None:
    cause = ConnectionRefusedError("the cause")
    async with LocalRealm() as realm:
        node = refusing_node(realm, error, cause)
        with pytest.raises(type(error)) as info:
            async with node.start():
                pytest.fail("the block must not run")  # pragma: no cover
    assert info.value is error
    assert info.value.__cause__ is cause


async def test_except_auth_error_around_the_block_catches_it() -> None:
    # The newcomer's form, written out: a plain except clause, no except*.
    async with LocalRealm() as realm:
        node = refusing_node(realm, AuthError("refused"), ValueError("x"))
        caught = False
        try:
            async with node.start():
                pass  # pragma: no cover
        except AuthError:
            caught = True
    assert caught


async def test_a_crash_after_start_comes_out_plain() -> None:
    async with LocalRealm() as realm:
        transport = CrashNow(realm.hub.transport())
        system = ActrSystem(
            realm.config(),
            transport=transport,  # type: ignore[arg-type]
            signaling=realm.signaling.connector(),
        )

        async def crash_while_running() -> None:
            async with system.attach(Echo()).start():
                transport.crash.set()
                await trio.sleep_forever()

        with pytest.raises(OSError, match="transport crashed"):
            await crash_while_running()


class BodyError(Exception):
    pass


async def test_the_blocks_own_exception_comes_out_unchanged() -> None:
    error = BodyError("mine")
    async with LocalRealm() as realm:
        with pytest.raises(BodyError) as info:
            async with realm.start(Echo()):
                raise error
    assert info.value is error
    assert info.value.__context__ is None
    # Its traceback still starts at the raise in the block.
    assert any(
        frame.name == test_the_blocks_own_exception_comes_out_unchanged.__name__
        for frame in info.traceback
    )


async def test_the_blocks_own_group_is_not_opened() -> None:
    group = ExceptionGroup("mine", [BodyError("only one")])
    async with LocalRealm() as realm:
        with pytest.raises(ExceptionGroup) as info:
            async with realm.start(Echo()):
                raise group
    assert info.value is group


async def test_several_failures_stay_a_group() -> None:
    # The block raises and the transport then fails while stopping: two failures, one group.
    async with LocalRealm() as realm:
        with pytest.RaisesGroup(BodyError, OSError, flatten_subgroups=True):
            async with realm.start(Echo(), wrap_transport=CrashOnStop):
                raise BodyError("first")


async def test_cancelling_the_enclosing_scope_is_still_a_cancellation() -> None:
    async with LocalRealm() as realm:
        with trio.CancelScope() as scope:
            async with realm.start(Echo()):
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught


# -- call / tell: typed errors, never groups ------------------------------------------------------


async def test_call_and_tell_failures_are_plain() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as echo:
        with pytest.raises(RouteNotFound):
            await echo.call(echo.actr_id, "demo.Echo.Missing", b"")
        nobody = ActrId(realm.realm, 999, Echo.actr_type)
        with pytest.raises(PeerUnavailable):
            await echo.tell(nobody, "demo.Echo.Echo", b"")


# -- the group helpers ----------------------------------------------------------------------------


def test_sole_exception_opens_only_one_member_groups() -> None:
    leaf = AuthError("x")
    assert sole_exception(ExceptionGroup("a", [ExceptionGroup("b", [leaf])])) is leaf
    assert sole_exception(ExceptionGroup("a", [leaf, ValueError()])) is None
    assert sole_exception(ExceptionGroup("a", [ExceptionGroup("b", [leaf, ValueError()])])) is None
    inner = ExceptionGroup("user", [leaf])
    assert sole_exception(ExceptionGroup("nursery", [inner]), keep=inner) is inner
    # A copy with the same leaves (as a cancel scope's split makes) still hands back the original.
    copy = inner.derive(inner.exceptions)
    assert sole_exception(ExceptionGroup("nursery", [copy]), keep=inner) is inner
    assert sole_exception(ExceptionGroup("n", [copy, ValueError()]), keep=inner) is None


def test_sole_exception_never_drops_a_cancellation_beside_a_failure() -> None:
    interrupt = KeyboardInterrupt()
    assert sole_exception(BaseExceptionGroup("a", [interrupt])) is interrupt
    assert sole_exception(BaseExceptionGroup("a", [interrupt, AuthError("x")])) is None


def test_reraise_keeps_the_exceptions_own_context() -> None:
    original_context = KeyError("where it started")
    error = AuthError("x")
    error.__context__ = original_context
    try:
        raise ValueError("being handled")
    except ValueError:
        with pytest.raises(AuthError) as info:
            reraise(error)
    assert info.value.__context__ is original_context


# -- @route on a plain def -----------------------------------------------------------------------


def test_route_on_a_plain_def_is_a_type_error_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"needs an async def.*Bad\.echo"):

        class Bad(Workload):
            actr_type = ActrType("acme", "bad")

            @route("demo.Echo.Echo")
            def echo(self, request: bytes, ctx: Context) -> bytes:
                return request


# -- one node per data_dir ------------------------------------------------------------------------

IN_USE = r"data_dir .+ is in use by another node \(.*pid {pid}\)$"


async def test_a_second_node_on_a_data_dir_gets_one_line(tmp_path: Path) -> None:
    async with LocalRealm() as realm:
        async with realm.start(Echo(), data_dir=tmp_path) as first:
            with pytest.raises(DataDirInUse, match=IN_USE.format(pid=os.getpid())) as info:
                async with realm.start(Echo(), data_dir=tmp_path):
                    pytest.fail("the second node must not start")  # pragma: no cover
            assert "\n" not in str(info.value)
            assert isinstance(info.value, ConfigError)
            # The first node never noticed.
            assert await first.call(first.actr_id, "demo.Echo.Echo", b"still") == b"still"
        # Released on stop: the same data_dir starts again, as the same node.
        async with realm.start(Echo(), data_dir=tmp_path) as again:
            assert again.actr_id == first.actr_id
        assert (tmp_path / LOCK_FILE).read_text() == ""


async def test_a_failed_start_releases_the_data_dir(tmp_path: Path) -> None:
    async with LocalRealm() as realm:
        node = refusing_node(realm, AuthError("no"), ValueError("x"), data_dir=tmp_path)
        with pytest.raises(AuthError):
            async with node.start():
                pass  # pragma: no cover
        async with realm.start(Echo(), data_dir=tmp_path):
            pass


async def test_a_stale_lock_file_from_a_dead_process_does_not_block(tmp_path: Path) -> None:
    code = "import os; print(os.getpid())"
    with trio.fail_after(60):
        dead = await trio.run_process([sys.executable, "-c", code], capture_stdout=True)
    (tmp_path / LOCK_FILE).write_bytes(dead.stdout)
    async with LocalRealm() as realm, realm.start(Echo(), data_dir=tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from actr_trio._datadir import hold_data_dir

    with hold_data_dir(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()  # until the test kills us
    """
)


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def test_another_process_holding_the_data_dir_is_named_until_it_dies(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(60):
            assert await read_line(proc.stdout) == b"locked\n"
        async with LocalRealm() as realm:
            with pytest.raises(DataDirInUse, match=IN_USE.format(pid=proc.pid)):
                async with realm.start(Echo(), data_dir=tmp_path):
                    pytest.fail("the node must not start")  # pragma: no cover
            proc.kill()  # a crash: the kernel releases the lock; the stale pid stays in the file
            with trio.fail_after(60):
                await proc.wait()
            async with realm.start(Echo(), data_dir=tmp_path):
                pass
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()


# -- the CLI: one line and a non-zero status for an ActrError -------------------------------------


def fake_command(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run(args: argparse.Namespace) -> int:
        raise error

    module = types.ModuleType("fake_actr_command")
    module.add_arguments = lambda parser: None  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(actr_cli._COMMANDS, "fake", (module.__name__, "a test command"))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AuthError("realm 'kvsec' requires a secret"), 1),
        (ExceptionGroup("nursery", [ExceptionGroup("nursery", [AuthError("refused")])]), 1),
        (ConfigError("max_payload='big' is not an integer"), 2),
    ],
)
def test_cli_prints_one_line_for_an_actr_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    status: int,
) -> None:
    fake_command(monkeypatch, error)
    assert actr_cli.main(["fake"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("actr-trio fake: error: ")


def test_cli_keeps_the_traceback_of_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        actr_cli.main(["fake"])
    fake_command(monkeypatch, ExceptionGroup("two", [AuthError("a"), AuthError("b")]))
    with pytest.RaisesGroup(AuthError, AuthError):
        actr_cli.main(["fake"])


async def test_cli_process_exits_with_one_line_when_signaling_is_unreachable() -> None:
    # A port that was just free: nothing listens on it, so registration fails at once.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    command = [sys.executable, "-m", "actr_trio.cli", "demo", "--role", "worker"]
    with trio.fail_after(60):
        result = await trio.run_process(
            [*command, "--signaling", f"ws://127.0.0.1:{port}"], capture_stdout=True, capture_stderr=True, check=False
        )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("actr-trio demo: error: cannot register")
