"""The in-process route itself: when it is taken, what it skips, where it stops, and the pieces
it relies on (the per-run directory, the deadline timer, the scheduler's shared scope, ids).
The guarantees it keeps are checked by the other unit tests, which run on both paths."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actr_trio import ActrSystem, ActrType, Context, Lane, Priority, Workload, route
from actr_trio._deadlines import DeadlineTimer
from actr_trio._local import Directory
from actr_trio._scheduler import Scheduler
from actr_trio._tokens import _pool, request_id, traceparent
from actr_trio.errors import DeadlineExceeded, PeerUnavailable, StreamIncomplete
from actr_trio.testing import LocalRealm
from actr_trio.transport import Transport
from actr_trio.transport._loopback import LoopbackTransport

BOUND = 10  # seconds; never reached when things work


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    def __init__(self, name: bytes = b"") -> None:
        self.name = name
        self.seen: list[bytes] = []
        self.gate = trio.Event()
        self.gate.set()

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return self.name + request

    @route("demo.Echo.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        await self.gate.wait()
        self.seen.append(request)
        return b""

    @route("demo.Echo.Slow")
    async def slow(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


def _loopback(ref: object) -> LoopbackTransport:
    transport = ref._core.transport  # type: ignore[attr-defined]
    assert isinstance(transport, LoopbackTransport)
    return transport


async def test_in_process_envelopes_never_touch_the_transport() -> None:
    echo = Echo()
    async with LocalRealm() as realm, realm.start(echo) as a, realm.start(Caller()) as b:
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
        await b.tell(a.actr_id, "demo.Echo.Put", b"t")
        with pytest.raises(StreamIncomplete, match="no callback"):
            async with b.open_stream(a.actr_id, "s", lane=Lane.RELIABLE) as stream:
                await stream.send(b"chunk")  # no callback: refused in process, not sent
        stats = b.statistics().outbound
        assert stats.direct == 2
        assert (stats.sent, stats.batches) == (0, 0)
        assert _loopback(b).statistics().sent_packets == 0
        assert _loopback(a).statistics().sent_packets == 0  # the answer came back directly too


async def test_direct_false_sends_everything_through_the_transport() -> None:
    async with (
        LocalRealm(direct=False) as realm,
        realm.start(Echo()) as a,
        realm.start(Caller()) as b,
    ):
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
        assert b.statistics().outbound.direct == 0
        assert _loopback(b).statistics().sent_packets > 0


async def test_a_wrapped_transport_keeps_its_node_on_the_wire() -> None:
    wrapped: list[Transport] = []

    def keep(inner: Transport) -> Transport:
        wrapped.append(inner)
        return inner

    async with (
        LocalRealm() as realm,
        realm.start(Echo()) as a,
        realm.start(Caller(), wrap_transport=keep) as b,
    ):
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
        assert b.statistics().outbound.direct == 0
        assert a.statistics().outbound.direct == 0  # b is not in the directory: answered by wire


async def test_two_realms_in_one_run_never_meet_even_with_equal_ids() -> None:
    async with (
        LocalRealm() as one,
        LocalRealm() as two,
        one.start(Echo(b"one:")) as a1,
        two.start(Echo(b"two:")) as a2,
        two.start(Caller()) as caller,
    ):
        assert a1.actr_id == a2.actr_id  # same realm name, same first serial
        reply = await caller.call(a2.actr_id, "demo.Echo.Echo", b"x")
    assert reply == b"two:x"


def test_the_directory_lives_and_dies_with_its_trio_run() -> None:
    seen: list[int] = []

    async def run_once() -> None:
        async with LocalRealm() as realm, realm.start(Echo()):
            seen.append(len(Directory(realm.signaling.issuer.public_bytes()).peers))
        seen.append(len(Directory(realm.signaling.issuer.public_bytes()).peers))

    trio.run(run_once)
    trio.run(run_once)
    assert seen == [1, 0, 1, 0]


async def test_a_stopped_node_leaves_the_directory_and_is_unreachable() -> None:
    async with LocalRealm() as realm, realm.start(Caller()) as b:
        async with realm.start(Echo()) as a:
            peer = a.actr_id
            key = realm.signaling.issuer.public_bytes()
            assert Directory(key).get(peer) is not None
        assert Directory(key).get(peer) is None
        with trio.fail_after(BOUND), pytest.raises(PeerUnavailable):
            await b.tell(peer, "demo.Echo.Put", b"late", timeout=5)


async def test_per_sender_fifo_holds_when_the_route_switches_from_wire_to_direct() -> None:
    """While something is in flight on the wire to a node, later envelopes follow it there,
    even once the node can be reached in process."""
    echo = Echo()
    held = trio.Event()

    class Holding(LoopbackTransport):
        async def send(self, peer, lane, packets):  # type: ignore[no-untyped-def]
            await held.wait()
            await super().send(peer, lane, packets)

    async with LocalRealm() as realm, realm.start(echo) as a:
        core = a._core  # type: ignore[attr-defined]
        directory = core._directory
        directory.remove(core._ingate)  # not reachable in process for now: the wire it is
        system = ActrSystem(
            realm.config(), transport=Holding(realm.hub), signaling=realm.signaling.connector()
        )
        async with system.attach(Caller()).start() as b:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.tell, a.actr_id, "demo.Echo.Put", b"1")
                await trio.testing.wait_all_tasks_blocked()
                directory.add(core._ingate)  # reachable in process again, "1" still in flight
                nursery.start_soon(b.tell, a.actr_id, "demo.Echo.Put", b"2")
                await trio.testing.wait_all_tasks_blocked()
                held.set()
            assert b.statistics().outbound.direct == 0  # "2" followed "1" on the wire
            with trio.fail_after(BOUND):
                await b.tell(a.actr_id, "demo.Echo.Put", b"3")  # nothing in flight: in process
            assert b.statistics().outbound.direct == 1
    assert echo.seen == [b"1", b"2", b"3"]


async def test_a_cancelled_tell_hands_nothing_over() -> None:
    echo = Echo()
    async with LocalRealm() as realm, realm.start(echo) as a, realm.start(Caller()) as b:
        before = a.statistics().mailbox.accepted
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.tell(a.actr_id, "demo.Echo.Put", b"never")
        assert a.statistics().mailbox.accepted == before
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.call(a.actr_id, "demo.Echo.Echo", b"never")
        assert a.statistics().mailbox.accepted == before


async def test_a_call_fails_at_its_deadline_and_the_handler_is_cancelled_then() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        with trio.fail_after(BOUND), pytest.raises(DeadlineExceeded, match="deadline"):
            await b.call(a.actr_id, "demo.Echo.Slow", b"", timeout=0.05)
        # The handler was cancelled at the same deadline: the next call is served at once.
        with trio.fail_after(BOUND):
            assert await b.call(a.actr_id, "demo.Echo.Echo", b"next") == b"next"
        assert a.statistics().scheduler.handled == 2


async def test_a_call_whose_deadline_passes_before_its_handler_starts_fails() -> None:
    async with LocalRealm() as realm, realm.start(Echo()) as a, realm.start(Caller()) as b:
        with trio.fail_after(BOUND), pytest.raises(DeadlineExceeded):
            await b.call(a.actr_id, "demo.Echo.Echo", b"", timeout=1e-9)


# ------------------------------------------------------------------- pieces


class _Entry:
    def __init__(self) -> None:
        self.settled = False
        self.expired = trio.Event()

    def expire(self) -> None:
        self.expired.set()


async def test_deadline_timer_expires_in_deadline_order_and_skips_settled_entries() -> None:
    timer = DeadlineTimer()
    order: list[str] = []
    entries = {name: _Entry() for name in ("late", "early", "done")}
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        now = trio.current_time()
        timer.add(now + 0.2, entries["late"])
        timer.add(now + 0.05, entries["early"])  # earlier than what the timer sleeps until
        timer.add(now + 0.01, entries["done"])
        entries["done"].settled = True
        for name in ("early", "late"):
            with trio.fail_after(BOUND):
                await entries[name].expired.wait()
            order.append(name)
        nursery.cancel_scope.cancel()
    assert order == ["early", "late"]
    assert not entries["done"].expired.is_set()


async def test_deadline_timer_drops_settled_entries_without_a_wake_up_per_entry() -> None:
    """Calls answered long before their deadlines: the timer forgets them before it sleeps,
    and a later deadline added then does not wake it (no task switch per call)."""
    timer = DeadlineTimer()
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        now = trio.current_time()
        answered = _Entry()
        timer.add(now + 30, answered)  # wakes the sleeping timer: it has nothing earlier
        answered.settled = True
        await trio.testing.wait_all_tasks_blocked()  # the timer ran and went back to sleep
        assert timer._heap == []  # the settled entry was dropped, not slept for
        timer.add(now + 31, _Entry())
        assert not timer._wake.is_set()  # it sleeps until now + 30 anyway: no wake-up
        nursery.cancel_scope.cancel()


def test_deadline_timer_sweeps_settled_entries() -> None:
    timer = DeadlineTimer()
    live = _Entry()
    timer.add(math.inf, live)
    for _ in range(5000):
        entry = _Entry()
        entry.settled = True
        timer.add(1.0, entry)
    assert len(timer._heap) < 2048  # swept: the settled ones do not pile up


async def test_scheduler_cancels_an_overrunning_handler_and_keeps_going() -> None:
    timer = DeadlineTimer()
    expired: list[str] = []
    done: list[str] = []
    finished = trio.Event()

    async def handle(item: str) -> None:
        if item == "slow":
            scheduler.bound(trio.current_time() + 0.05)
            try:
                await trio.sleep_forever()
            finally:
                scheduler.unbound()
        if item == "quick":
            scheduler.bound(trio.current_time() + 60)
            scheduler.unbound()
        done.append(item)
        if len(done) == 2:
            finished.set()

    scheduler: Scheduler[str] = Scheduler(
        handle, capacity=10, expired=expired.append, deadlines=timer
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        await nursery.start(scheduler.run)
        for item in ("slow", "quick", "tell"):
            scheduler.enqueue(Priority.NORMAL, item)
        with trio.fail_after(BOUND):
            await finished.wait()
        nursery.cancel_scope.cancel()
    assert expired == ["slow"]
    assert done == ["quick", "tell"]


def test_ids_are_random_hex_of_their_size_and_a_fork_drops_the_pool() -> None:
    ids = {request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(traceparent()) == 55
    _pool.drop()  # what a forked child does: it never hands out its parent's ids
    assert request_id() not in ids
