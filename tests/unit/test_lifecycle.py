"""Start and shutdown order (docs/architecture.md), the same for every way a node ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

from actr_trio import ActrId, ActrSystem, ActrType, Config, Context, Workload, route
from actr_trio.errors import RemoteShuttingDown, ShuttingDown
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import LoopbackTransport, SignalingSession

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

START = ["registered", "transport open", "on_start", "accepting"]
STOP = ["refusing", "on_stop", "transport closed", "unregistered"]


class Recorder(Workload):
    actr_type = ActrType("acme", "recorder")

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.gate = trio.Event()
        self.gate.set()
        self.entered = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        self.events.append("on_start")

    async def on_stop(self, ctx: Context) -> None:
        self.events.append("on_stop")

    @route("demo.Rec.Work")
    async def work(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        await self.gate.wait()
        self.events.append(f"handled {request.decode()}")
        return b""


class RecordingTransport(TransportWrapper):
    """A loopback transport that records when it opens and closes, and can crash on demand."""

    def __init__(self, inner: LoopbackTransport, events: list[str]) -> None:
        super().__init__(inner)
        self.events = events
        self.crash = trio.Event()

    async def run(self, session: SignalingSession, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run, session)
            self.events.append("transport open")
            task_status.started()
            try:
                await self.crash.wait()
                raise OSError("transport crashed")
            finally:
                self.events.append("transport closed")
                nursery.cancel_scope.cancel()


class RecordingConnector:
    def __init__(self, inner: object, events: list[str]) -> None:
        self._inner = inner
        self.events = events

    async def run(
        self,
        actr_type: ActrType,
        previous: ActrId | None,
        node_key: object = None,
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            session = await nursery.start(self._inner.run, actr_type, previous, node_key)  # type: ignore[attr-defined]
            self.events.append("registered")
            task_status.started(session)
            try:
                await trio.sleep_forever()
            finally:
                self.events.append("unregistered")
                nursery.cancel_scope.cancel()


def make_node(realm: LocalRealm, events: list[str]) -> tuple[Recorder, RecordingTransport, object]:
    workload = Recorder(events)
    transport = RecordingTransport(realm.hub.transport(), events)
    system = ActrSystem(
        realm.config(),
        transport=transport,  # type: ignore[arg-type]
        signaling=RecordingConnector(realm.signaling.connector(), events),  # type: ignore[arg-type]
    )
    return workload, transport, system.attach(workload)


async def started(events: list[str], ref: object) -> None:
    events.append("accepting")


def assert_order(events: list[str]) -> None:
    lifecycle = [e for e in events if not e.startswith("handled")]
    assert lifecycle[:4] == START
    assert [e for e in lifecycle[4:] if e != "refusing"] == [s for s in STOP if s != "refusing"]


async def test_order_on_shutdown() -> None:
    events: list[str] = []
    async with LocalRealm() as realm:
        _, _, node = make_node(realm, events)
        async with node.start() as ref:  # type: ignore[attr-defined]
            events.append("accepting")
            await ref.shutdown()
            assert events[-3:] == ["on_stop", "transport closed", "unregistered"]
    assert_order(events)


async def test_order_on_leaving_the_block() -> None:
    events: list[str] = []
    async with LocalRealm() as realm:
        _, _, node = make_node(realm, events)
        async with node.start():  # type: ignore[attr-defined]
            events.append("accepting")
    assert_order(events)


async def test_order_on_cancellation_of_the_enclosing_scope() -> None:
    events: list[str] = []
    async with LocalRealm() as realm:
        _, _, node = make_node(realm, events)
        with trio.CancelScope() as scope:
            async with node.start():  # type: ignore[attr-defined]
                events.append("accepting")
                scope.cancel()
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert_order(events)


async def test_sibling_crash_cancels_the_rest_and_propagates() -> None:
    events: list[str] = []
    async with LocalRealm() as realm:
        _, transport, node = make_node(realm, events)

        async def crash_while_running() -> None:
            async with node.start():  # type: ignore[attr-defined]
                events.append("accepting")
                transport.crash.set()
                await trio.sleep_forever()

        # One crash comes out as itself, not wrapped in the nurseries' exception groups.
        with pytest.raises(OSError, match="transport crashed"):
            await crash_while_running()
    # on_stop still ran, and unregistering came last.
    assert "on_stop" in events
    assert events[-1] == "unregistered"
    assert events[:4] == START


async def test_drain_then_refuse_new_work() -> None:
    events: list[str] = []
    async with LocalRealm() as realm:
        workload, _, node = make_node(realm, events)
        workload.gate = trio.Event()

        class Sender(Workload):
            actr_type = ActrType("acme", "sender")

        async with realm.start(Sender()) as sender, node.start() as ref:  # type: ignore[attr-defined]
            for i in range(5):
                await sender.tell(ref.actr_id, "demo.Rec.Work", str(i).encode())
            await workload.entered.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.shutdown)
                await trio.testing.wait_all_tasks_blocked()
                # Shutdown began: accepted envelopes wait to be drained, new ones are refused.
                with pytest.raises(RemoteShuttingDown):
                    await sender.tell(ref.actr_id, "demo.Rec.Work", b"late")
                assert isinstance(RemoteShuttingDown("x"), ShuttingDown)
                workload.gate.set()
    handled = [e for e in events if e.startswith("handled")]
    assert handled == [f"handled {i}" for i in range(5)]
    assert events.index("handled 4") < events.index("on_stop") < events.index("unregistered")


async def test_drain_is_bounded_by_shutdown_grace() -> None:
    events: list[str] = []
    async with LocalRealm(shutdown_grace=0.2) as realm:
        workload, _, node = make_node(realm, events)
        workload.gate = trio.Event()  # never set: the handler hangs

        class Sender(Workload):
            actr_type = ActrType("acme", "sender")

        async with realm.start(Sender()) as sender, node.start() as ref:  # type: ignore[attr-defined]
            await sender.tell(ref.actr_id, "demo.Rec.Work", b"stuck")
            await sender.tell(ref.actr_id, "demo.Rec.Work", b"queued")
            await workload.entered.wait()
            with trio.fail_after(5):
                await ref.shutdown()
            pending = await ref.mailbox.pending()
    # Neither finished; both stay in the mailbox for the next start.
    assert [e for e in events if e.startswith("handled")] == []
    assert len(pending) == 2
    assert events[-3:] == ["on_stop", "transport closed", "unregistered"]


NODE_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from actr_trio import ActrType, Context, Workload
    from actr_trio.testing import LocalRealm, TransportWrapper

    class W(Workload):
        actr_type = ActrType("acme", "sig")
        async def on_start(self, ctx: Context) -> None:
            print("on_start", flush=True)
        async def on_stop(self, ctx: Context) -> None:
            print("on_stop", flush=True)

    async def main() -> None:
        async with LocalRealm() as realm, realm.start(W()) as ref:
            async with trio.open_nursery() as nursery:
                await nursery.start(ref.wait_for_shutdown)
                print("ready", flush=True)  # the signal handlers are in place
            print("after wait", flush=True)
        print("stopped", flush=True)

    trio.run(main)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_runs_the_graceful_shutdown() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["on_start", "ready"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out.split() == ["on_stop", "after", "wait", "stopped"]


def test_config_error_names_the_field() -> None:
    with pytest.raises(ValueError, match="shutdown_grace"):
        Config(shutdown_grace=-1)
