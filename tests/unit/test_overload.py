"""Backpressure (issue 6): a full mailbox refuses with Overloaded; senders back off and resend
until they get in (or their deadline passes); nothing acked is lost."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from actr_trio import ActrType, Context, Workload, route
from actr_trio.errors import Overloaded
from actr_trio.testing import LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")


class Slow(Workload):
    actr_type = ActrType("acme", "slow")

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.handled: list[bytes] = []

    @route("demo.Slow.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        await self.gate.wait()
        self.handled.append(request)
        return b""


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


def run(main) -> None:  # type: ignore[no-untyped-def]
    # In-memory mailboxes and loopback only: virtual time is safe and backoff costs nothing.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_senders_back_off_and_get_in_once_there_is_room() -> None:
    slow = Slow()
    stats: list[int] = []

    async def main() -> None:
        async with (
            LocalRealm() as realm,
            realm.start(slow, mailbox_capacity=5) as a,
            realm.start(Sender()) as b,
        ):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(
                        partial(b.tell, a.actr_id, "demo.Slow.Put", b"%d" % i, timeout=600)
                    )
                await trio.sleep(5)  # virtual: the mailbox stays full for a while
                assert a.statistics().mailbox.refused > 0
                slow.gate.set()
            stats.append(b.statistics().outbound.overloaded)

    run(main)
    assert stats[0] > 0
    assert sorted(slow.handled, key=int) == [b"%d" % i for i in range(20)]


def test_overloaded_until_the_deadline_raises_overloaded() -> None:
    slow = Slow()

    async def main() -> None:
        async with (
            LocalRealm(shutdown_grace=1) as realm,
            # The running one still counts; one sender may fill it all (no share): the bound
            # under test is the capacity itself.
            realm.start(slow, mailbox_capacity=2, mailbox_sender_share=1.0) as a,
            realm.start(Sender()) as b,
        ):
            await b.tell(a.actr_id, "demo.Slow.Put", b"running")
            await b.tell(a.actr_id, "demo.Slow.Put", b"queued")
            with pytest.raises(Overloaded):
                await b.tell(a.actr_id, "demo.Slow.Put", b"refused", timeout=3)
            slow.gate.set()

    run(main)
    assert slow.handled == [b"running", b"queued"]
