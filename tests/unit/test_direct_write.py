"""The wire path's direct write: a sender that finds its lane idle hands its packet to the
transport from its own task (no flusher wake-up), and a sender that finds a batch in flight
leaves its packet behind what is queued, so a lane's packets reach the transport in sequence
order whoever sends them. Also: the flusher, which sleeps without a cancel scope, still wakes
for an ack that is due (the node's DeadlineTimer wakes it)."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from actr_trio import ActrId, ActrType, Context, Lane, Workload, route
from actr_trio._deadlines import DeadlineTimer
from actr_trio._envelope import REQUEST, RESPONSE, decode_packet
from actr_trio._link import ACK_DELAY
from actr_trio._logging import RateLimiter
from actr_trio._peerlane import LinkItem, LinkShared, PeerLane
from actr_trio.testing import LocalRealm

PEER = ActrId("demo", 7, ActrType("acme", "peer"))
MAX = 1 << 20


class HeldTransport:
    """Records each batch with the task that sent it; ``hold`` makes the next send wait."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], trio.lowlevel.Task]] = []
        self.hold: trio.Event | None = None
        self.entered = trio.Event()

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        seqs = [decode_packet(p, max_payload=MAX).seq for p in packets]
        self.batches.append((seqs, trio.lowlevel.current_task()))
        hold, self.hold = self.hold, None
        self.entered.set()
        if hold is not None:
            await hold.wait()
        else:
            await trio.lowlevel.checkpoint()

    def forget(self, peer: ActrId) -> None:
        pass


def _lane(transport: HeldTransport, timer: DeadlineTimer) -> PeerLane:
    shared = LinkShared(transport, {}, RateLimiter(trio.current_time), timer)  # type: ignore[arg-type]
    return PeerLane(shared, PEER, Lane.RELIABLE)


def _item(n: int) -> LinkItem:
    return LinkItem(REQUEST, f"r{n}", b"", trio.current_time() + 60, None)


async def test_an_idle_lane_is_written_by_the_sender_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = HeldTransport()
    timer = DeadlineTimer()
    pl = _lane(transport, timer)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        nursery.start_soon(pl.flush_loop)
        await trio.testing.wait_all_tasks_blocked()
        pl.stamp(_item(1), wake=False)
        await pl.send_inline()
        assert transport.batches == [([1], trio.lowlevel.current_task())]
        assert pl.shared.direct_writes == 1
        assert not pl.wake.is_set()  # the flusher was never woken
        nursery.cancel_scope.cancel()


async def test_a_direct_write_never_overtakes_queued_packets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = HeldTransport()
    timer = DeadlineTimer()
    pl = _lane(transport, timer)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        nursery.start_soon(pl.flush_loop)
        await trio.testing.wait_all_tasks_blocked()
        held = transport.hold = trio.Event()

        async def first() -> None:
            pl.stamp(_item(1), wake=False)
            await pl.send_inline()

        nursery.start_soon(first)
        await transport.entered.wait()  # seq 1 is with the transport, which holds it
        # A response queued for the flusher (seq 2), then a sender that would write directly
        # (seq 3): the lane is busy, so its packet queues behind seq 2 and nothing is sent.
        pl.stamp(LinkItem(RESPONSE, "", b"", trio.current_time() + 60, None, slot=False))
        pl.stamp(_item(3), wake=False)
        await pl.send_inline()
        assert [seqs for seqs, _ in transport.batches] == [[1]]
        held.set()
        with trio.fail_after(10):
            while len(transport.batches) < 2:
                await trio.testing.wait_all_tasks_blocked()
        assert [seqs for seqs, _ in transport.batches] == [[1], [2, 3]]
        assert pl.shared.direct_writes == 1  # only the first: the rest went with the flusher
        nursery.cancel_scope.cancel()


async def test_the_sleeping_flusher_sends_an_ack_once_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = HeldTransport()
    timer = DeadlineTimer()
    pl = _lane(transport, timer)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        nursery.start_soon(pl.flush_loop)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        pl.owe_ack(5, 3, [], urgent=False)  # nothing goes back: a standalone ack, when due
        with trio.fail_after(10):  # virtual seconds: never reached when things work
            await transport.entered.wait()
        assert trio.current_time() - start >= ACK_DELAY
        assert pl.shared.acks_sent == 1
        nursery.cancel_scope.cancel()


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Client(Workload):
    actr_type = ActrType("acme", "client")


async def test_calls_over_the_wire_write_directly_and_stay_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        LocalRealm(direct=False) as realm,
        realm.start(Echo()) as server,
        realm.start(Client()) as client,
    ):
        answers = [
            await client.call(server.actr_id, "demo.Echo.Echo", b"%d" % i) for i in range(20)
        ]
        assert answers == [b"%d" % i for i in range(20)]
        stats = client.statistics().outbound
        assert stats.direct == 0  # the wire path (direct=False), not the in-process route
        # Each request left from its caller's own task, unless a standalone ack was with the
        # transport at that moment (then the flusher took it along).
        assert stats.direct_writes >= 20 - stats.acks_sent
        assert stats.direct_writes > 0
