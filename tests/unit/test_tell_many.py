"""``tell_many``: one accept, one commit and one frame for a batch; each message its own envelope
(own request id, handled in order). Every test runs on both paths (in process, and the wire)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actr_trio import ActrType, Context, Priority, Workload, route
from actr_trio.errors import Overloaded, RouteNotFound
from actr_trio.testing import LocalRealm

pytestmark = pytest.mark.usefixtures("envelope_path")

BOUND = 10  # seconds; generous for a loaded machine, never reached when things work


class Sink(Workload):
    actr_type = ActrType("acme", "sink")

    def __init__(self, *, hold: bool = False) -> None:
        self.seen: list[tuple[bytes, str, str]] = []  # (payload, request id, caller)
        self.gate = trio.Event()
        if not hold:
            self.gate.set()
        self.entered = trio.Event()
        self._want = 0
        self._reached = trio.Event()

    async def handled(self, count: int) -> None:
        """Return once ``count`` messages were handled."""
        self._want = count
        if len(self.seen) < count:
            self._reached = trio.Event()
            await self._reached.wait()

    @route("demo.Sink.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        await self.gate.wait()
        self.seen.append((request, ctx.request_id, str(ctx.caller_id)))
        if len(self.seen) >= self._want:
            self._reached.set()
        return b""

    @route("demo.Sink.Relay")
    async def relay(self, request: bytes, ctx: Context) -> bytes:
        """Forwards a batch from inside a handler (ctx.tell_many)."""
        target = ctx.self_id
        await ctx.tell_many(target, "demo.Sink.Put", [request + b"-1", request + b"-2"])
        return b"ok"


class Source(Workload):
    actr_type = ActrType("acme", "source")


async def test_each_message_is_its_own_envelope_in_order() -> None:
    sink = Sink()
    async with LocalRealm() as realm, realm.start(sink) as a, realm.start(Source()) as b:
        messages = [b"m%d" % i for i in range(64)]
        with trio.fail_after(BOUND):
            await b.tell_many(a.actr_id, "demo.Sink.Put", messages)
            await b.tell_many(a.actr_id, "demo.Sink.Put", [b"after"])
            await sink.handled(65)
    assert [payload for payload, _, _ in sink.seen] == [*messages, b"after"]
    request_ids = {request_id for _, request_id, _ in sink.seen}
    assert len(request_ids) == 65  # one envelope, one request id per message
    assert {caller for _, _, caller in sink.seen} == {str(b.actr_id)}


async def test_a_batch_is_one_accept_one_commit_and_one_frame() -> None:
    sink = Sink(hold=True)  # handlers wait: what the mailbox did is all there is to count
    async with LocalRealm() as realm, realm.start(sink) as a, realm.start(Source()) as b:
        with trio.fail_after(BOUND):
            await b.tell(a.actr_id, "demo.Sink.Put", b"first")  # links opened, handler entered
            await sink.entered.wait()
            mailbox, outbound = a.statistics().mailbox, b.statistics().outbound
            inbound = a.statistics().inbound
            await b.tell_many(a.actr_id, "demo.Sink.Put", [b"x"] * 64)
            after = a.statistics()
            assert after.mailbox.accepted - mailbox.accepted == 64
            assert after.mailbox.transactions - mailbox.transactions == 1  # one commit
            assert after.inbound.batches - inbound.batches == 1  # one accept
            if realm.direct:
                assert b.statistics().outbound.direct - outbound.direct == 64
            else:
                assert b.statistics().outbound.batches - outbound.batches == 1  # one frame
            sink.gate.set()
            await sink.handled(65)


async def test_a_durable_receiver_commits_the_batch_once() -> None:
    sink = Sink()
    async with (
        LocalRealm() as realm,
        realm.start(Source()) as b,
        realm.start(sink, data_dir=realm.temporary_data_dir()) as a,
    ):
        with trio.fail_after(BOUND):
            await b.tell_many(a.actr_id, "demo.Sink.Put", [b"d%d" % i for i in range(20)])
            await sink.handled(20)
        assert a.statistics().mailbox.durable
    assert [p for p, _, _ in sink.seen] == [b"d%d" % i for i in range(20)]


async def test_a_durable_sender_forgets_its_outbox_once_committed() -> None:
    sink = Sink()
    async with (
        LocalRealm() as realm,
        realm.start(sink) as a,
        realm.start(Source(), data_dir=realm.temporary_data_dir()) as b,
    ):
        with trio.fail_after(BOUND):
            await b.tell_many(a.actr_id, "demo.Sink.Put", [b"o1", b"o2", b"o3"])
            await b.mailbox.flush()
            assert await b.mailbox.outgoing() == []  # type: ignore[attr-defined]
            await sink.handled(3)


async def test_a_refusal_applies_to_the_batch_and_empty_sends_nothing() -> None:
    async with LocalRealm() as realm, realm.start(Sink()) as a, realm.start(Source()) as b:
        before = a.statistics().mailbox.accepted
        with trio.fail_after(BOUND), pytest.raises(RouteNotFound):
            await b.tell_many(a.actr_id, "demo.Sink.Nope", [b"1", b"2"])
        await b.tell_many(a.actr_id, "demo.Sink.Put", [])
        assert a.statistics().mailbox.accepted == before


async def test_an_overloaded_receiver_takes_the_rest_once_there_is_room() -> None:
    sink = Sink(hold=True)
    async with (
        LocalRealm() as realm,
        realm.start(sink, mailbox_capacity=8, mailbox_sender_share=1.0) as a,  # no share
        realm.start(Source()) as b,
    ):
        with trio.fail_after(BOUND):
            await b.tell(a.actr_id, "demo.Sink.Put", b"blocker")
            await sink.entered.wait()
            async with trio.open_nursery() as nursery:
                batch = [b"b%d" % i for i in range(20)]
                nursery.start_soon(b.tell_many, a.actr_id, "demo.Sink.Put", batch)
                await trio.testing.wait_all_tasks_blocked()  # the sender backs off
                assert a.statistics().mailbox.refused > 0
                sink.gate.set()  # room again: the refused tail is handed over again
            await sink.handled(21)
    assert [p for p, _, _ in sink.seen] == [b"blocker", *(b"b%d" % i for i in range(20))]
    assert b.statistics().outbound.overloaded > 0


async def test_overloaded_until_the_deadline_raises_and_keeps_the_accepted_part() -> None:
    sink = Sink(hold=True)
    async with (
        LocalRealm() as realm,
        realm.start(sink, mailbox_capacity=4, mailbox_sender_share=1.0) as a,  # no share
        realm.start(Source()) as b,
    ):
        with trio.fail_after(BOUND):
            await b.tell(a.actr_id, "demo.Sink.Put", b"blocker")
            await sink.entered.wait()
            with pytest.raises(Overloaded):
                await b.tell_many(a.actr_id, "demo.Sink.Put", [b"x"] * 10, timeout=0.2)
            # Capacity 4: the blocker (pending while it runs) and the batch's first 3.
            assert a.statistics().mailbox.accepted == 4
            sink.gate.set()


async def test_ctx_tell_many_from_a_handler_and_priorities() -> None:
    sink = Sink()
    async with LocalRealm() as realm, realm.start(sink) as a, realm.start(Source()) as b:
        with trio.fail_after(BOUND):
            assert await b.call(a.actr_id, "demo.Sink.Relay", b"r") == b"ok"
            await b.tell_many(a.actr_id, "demo.Sink.Put", [b"h"], priority=Priority.HIGH)
            await sink.handled(3)
    assert sorted(p for p, _, _ in sink.seen) == [b"h", b"r-1", b"r-2"]
    relayed = [p for p, _, _ in sink.seen if p.startswith(b"r")]
    assert relayed == [b"r-1", b"r-2"]
