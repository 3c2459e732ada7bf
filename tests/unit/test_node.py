"""The node end to end on LocalRealm: calls, tells, errors, deadlines, lifecycle order."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actr_trio import (
    ActrId,
    ActrSystem,
    ActrType,
    Config,
    Context,
    Lane,
    Priority,
    Workload,
    route,
)
from actr_trio._envelope import (
    REQUEST,
    Envelope,
    encode_envelope,
    encode_sequenced,
)
from actr_trio._proto.actr import types_pb2
from actr_trio.errors import (
    ConfigError,
    DeadlineExceeded,
    EnvelopeTooLarge,
    MalformedEnvelope,
    RemoteError,
    RouteNotFound,
)
from actr_trio.testing import LocalRealm, MemorySignaling
from actr_trio.transport import LoopbackHub

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

ECHO = ActrType("acme", "echo")
CALLER = ActrType("acme", "caller")


class Echo(Workload):
    actr_type = ECHO

    def __init__(self) -> None:
        self.notes: list[bytes] = []
        self.gate: trio.Event | None = None
        self.entered = trio.Event()

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("demo.Echo.Type", request=types_pb2.ActrType, response=types_pb2.ActrType)
    async def typed(self, request: types_pb2.ActrType, ctx: Context) -> types_pb2.ActrType:
        return types_pb2.ActrType(manufacturer=request.name, name=request.manufacturer)

    @route("demo.Echo.Fail")
    async def fail(self, request: bytes, ctx: Context) -> bytes:
        raise ValueError("boom")

    @route("demo.Echo.Coded")
    async def coded(self, request: bytes, ctx: Context) -> bytes:
        raise RemoteError("no such account", code="acme.not_found")

    @route("demo.Echo.Wrong")
    async def wrong(self, request: bytes, ctx: Context) -> bytes:
        return 42  # type: ignore[return-value]

    @route("demo.Echo.Note")
    async def note(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.notes.append(request)
        return b""

    @route("demo.Echo.Slow")
    async def slow(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(10)
        return b"late"

    @route("demo.Echo.Whoami")
    async def whoami(self, request: bytes, ctx: Context) -> bytes:
        assert ctx.caller_id is not None
        assert ctx.request_id
        assert ctx.trace_id
        assert ctx.deadline < math.inf
        return str(ctx.caller_id).encode()


class Caller(Workload):
    actr_type = CALLER


async def test_call_bytes_and_protobuf() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
        reply = await b.call(
            a.actr_id,
            "demo.Echo.Type",
            types_pb2.ActrType(manufacturer="m", name="n"),
            response=types_pb2.ActrType,
        )
        assert (reply.manufacturer, reply.name) == ("n", "m")
        assert await b.call(a.actr_id, "demo.Echo.Whoami", b"") == str(b.actr_id).encode()


async def test_errors_reach_the_caller_and_the_node_keeps_serving() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        with pytest.raises(RouteNotFound, match=r"demo\.Echo\.Nope"):
            await b.call(a.actr_id, "demo.Echo.Nope", b"")
        with pytest.raises(RemoteError, match="boom") as failed:
            await b.call(a.actr_id, "demo.Echo.Fail", b"")
        assert failed.value.code == "ValueError"
        with pytest.raises(RemoteError, match="no such account") as coded:
            await b.call(a.actr_id, "demo.Echo.Coded", b"")
        assert coded.value.code == "acme.not_found"
        with pytest.raises(RemoteError, match="expected bytes"):
            await b.call(a.actr_id, "demo.Echo.Wrong", b"")
        with pytest.raises(MalformedEnvelope, match="not a ActrType"):
            await b.call(a.actr_id, "demo.Echo.Type", b"\xff\xff\xff")
        with pytest.raises(RouteNotFound):
            await b.tell(a.actr_id, "demo.Echo.Nope", b"")
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"still here") == b"still here"
        stats = a.statistics()
        assert stats.inbound.refused == 2  # the two unknown routes
        assert stats.scheduler.handled >= 4  # the last one may still be finishing


async def test_oversized_payload_is_refused_on_both_sides() -> None:
    async with (
        LocalRealm() as realm,
        realm.start(Echo(), max_payload=1000) as a,
        realm.start(Caller(), max_payload=100_000) as b,
    ):
        with pytest.raises(EnvelopeTooLarge):
            await a.call(b.actr_id, "demo.Echo.Echo", b"x" * 1001)  # sender's own limit
        with pytest.raises(EnvelopeTooLarge):
            await b.call(a.actr_id, "demo.Echo.Echo", b"x" * 5000)  # receiver's limit
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"ok") == b"ok"


async def test_garbage_packets_are_rejected_and_the_node_keeps_serving() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        transport = b._core.transport  # inject raw bytes as a broken peer would
        await transport.send(a.actr_id, Lane.RELIABLE, [b"\xff\x00garbage", b"\x0a\x05short"])
        bad_env = Envelope(
            kind=REQUEST,
            route_key="demo.Echo.Echo",
            payload=b"",
            request_id="r1",
            traceparent="",
            caller=b.actr_id,
            target=a.actr_id,
            priority=Priority.NORMAL,
            lane=Lane.RELIABLE,
            deadline_ms=0,
        )
        # Wrong kind on the wire (a sequenced packet) -> refused, not fatal.
        raw = bytearray(encode_envelope(bad_env))
        raw[1] = 77  # kind = 77
        await transport.send(a.actr_id, Lane.SIGNAL, [encode_sequenced(1, 1, bytes(raw))])
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"alive") == b"alive"
        stats = a.statistics().inbound
        assert stats.rejected_packets == 2
        assert stats.refused == 1


async def test_deadline_exceeded_and_nested_deadline() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        with pytest.raises(DeadlineExceeded):
            await b.call(a.actr_id, "demo.Echo.Slow", b"", timeout=0.05)
        # The scheduler was not stalled by the abandoned handler beyond its own deadline.
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"next", timeout=5) == b"next"
        with pytest.raises(ConfigError):
            await b.call(a.actr_id, "demo.Echo.Echo", b"", timeout=0)


async def test_tell_returns_after_commit_then_is_handled() -> None:
    echo = Echo()
    echo.gate = trio.Event()
    async with LocalRealm() as realm, realm.start(echo) as a, realm.start(Caller()) as b:
        await b.tell(a.actr_id, "demo.Echo.Note", b"1")
        await b.tell(a.actr_id, "demo.Echo.Note", b"2")
        await echo.entered.wait()
        assert a.statistics().mailbox.accepted == 2
        assert echo.notes == []
        echo.gate.set()
    assert echo.notes == [b"1", b"2"]


async def test_priority_overtakes_while_blocked() -> None:
    echo = Echo()
    echo.gate = trio.Event()
    async with LocalRealm() as realm, realm.start(echo) as a, realm.start(Caller()) as b:
        await b.tell(a.actr_id, "demo.Echo.Note", b"first")
        await echo.entered.wait()
        for i in range(3):
            await b.tell(a.actr_id, "demo.Echo.Note", b"low%d" % i, priority=Priority.LOW)
            await b.tell(a.actr_id, "demo.Echo.Note", b"normal%d" % i)
            await b.tell(a.actr_id, "demo.Echo.Note", b"high%d" % i, priority=Priority.HIGH)
        echo.gate.set()
        await b.call(a.actr_id, "demo.Echo.Echo", b"", priority=Priority.LOW)
    assert echo.notes == [
        b"first",
        *(b"high%d" % i for i in range(3)),
        *(b"normal%d" % i for i in range(3)),
        *(b"low%d" % i for i in range(3)),
    ]


async def test_discover_sees_its_realm_only() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        assert await b.discover(ECHO) == [a.actr_id]
        assert await a.discover(ActrType("acme", "nobody")) == []
    async with LocalRealm("other") as other, other.start(Caller()) as c:
        assert await c.discover(ECHO) == []


async def test_attach_twice_and_start_twice_raise() -> None:
    async with LocalRealm() as realm:
        system = ActrSystem(
            Config(), transport=realm.hub.transport(), signaling=realm.signaling.connector()
        )
        node = system.attach(Echo())
        with pytest.raises(ConfigError, match="already has a workload"):
            system.attach(Echo())
        async with node.start():
            pass
        with pytest.raises(ConfigError, match="starts once"):
            async with node.start():
                pass  # pragma: no cover


async def test_workload_without_actr_type_is_refused() -> None:
    class NoType(Workload):
        pass

    async with LocalRealm() as realm:
        with pytest.raises(ConfigError, match="actr_type"):
            async with realm.start(NoType()):
                pass  # pragma: no cover


def test_route_validation() -> None:
    with pytest.raises(ConfigError, match=r"package\.Service\.Method"):
        route("nodots")
    with pytest.raises(ConfigError, match="protobuf message class"):
        route("a.B.C", request=str)
    with pytest.raises(ConfigError, match=r"Lane\.SIGNAL or Lane\.RELIABLE"):
        route("a.B.C", lane=Lane.LATENCY_FIRST)


async def test_unknown_peer_is_unavailable() -> None:
    from actr_trio.errors import PeerUnavailable

    async with LocalRealm() as realm, realm.start(Caller()) as b:
        ghost = ActrId("local", 999, ECHO)
        with pytest.raises(PeerUnavailable):
            await b.call(ghost, "demo.Echo.Echo", b"")


async def test_many_concurrent_callers_all_answered() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        results: list[bytes] = []

        async def one(i: int) -> None:
            results.append(await b.call(a.actr_id, "demo.Echo.Echo", b"%d" % i))

        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(one, i)
        assert sorted(results) == sorted(b"%d" % i for i in range(300))


async def test_two_realms_do_not_share_loopback() -> None:
    # A hub and a signaling service belong to one realm: a node of another hub is unknown.
    hub, signaling = LoopbackHub(), MemorySignaling("x")
    assert signaling.present() == []
    assert hub.transport() is not hub.transport()


async def test_acknowledged_tell_runs_even_after_its_delivery_deadline() -> None:
    """A tell returned (was committed), so it is handled however long it waited in the queue;
    a request whose caller's deadline passed while queued is not started."""
    echo = Echo()
    echo.gate = trio.Event()
    async with LocalRealm() as realm, realm.start(echo) as a, realm.start(Caller()) as b:
        await b.tell(a.actr_id, "demo.Echo.Note", b"blocker")
        await echo.entered.wait()
        await b.tell(a.actr_id, "demo.Echo.Note", b"late tell", timeout=0.05)
        with pytest.raises(DeadlineExceeded):
            await b.call(a.actr_id, "demo.Echo.Note", b"late call", timeout=0.05)
        await trio.sleep(0.1)  # both deadlines are now in the past, while they wait in the queue
        echo.gate.set()
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"after") == b"after"
    assert echo.notes == [b"blocker", b"late tell"]
