"""Issue 6: a sender far faster than the handler. The receiver's mailbox capacity refuses the
excess with Overloaded, senders back off, nothing acknowledged is lost, and the process's
memory stays bounded. Runs in a child process so its peak RSS is its own."""

from __future__ import annotations

import json
import sys
import textwrap

import trio

PROGRAM = textwrap.dedent(
    """
    import json, resource, sys, trio
    from actr_trio import ActrType, Context, Workload, route
    from actr_trio.testing import LocalRealm

    TOTAL, SENDERS, PAYLOAD = 8000, 64, 4096

    class Slow(Workload):
        actr_type = ActrType("acme", "slow")
        def __init__(self):
            self.handled = 0
        @route("demo.Slow.Put")
        async def put(self, request: bytes, ctx: Context) -> bytes:
            await trio.sleep(0.0005)  # far slower than the senders
            self.handled += 1
            return b""

    class Fast(Workload):
        actr_type = ActrType("acme", "fast")

    def rss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def main():
        slow = Slow()
        acked = 0
        async with LocalRealm() as realm, realm.start(slow, mailbox_capacity=200) as a, realm.start(Fast()) as b:
            start_rss = rss_mb()
            async def sender(n):
                nonlocal acked
                for _ in range(n):
                    await b.tell(a.actr_id, "demo.Slow.Put", bytes(PAYLOAD), timeout=300)
                    acked += 1
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for _ in range(SENDERS):
                        nursery.start_soon(sender, TOTAL // SENDERS)
            overloaded = b.statistics().outbound.overloaded
            refused = a.statistics().mailbox.refused
        print(json.dumps({"acked": acked, "handled": slow.handled, "overloaded": overloaded,
                          "refused": refused, "start_rss_mb": start_rss, "peak_rss_mb": rss_mb()}))

    trio.run(main)
    """
)


async def test_fast_sender_slow_handler_stays_bounded() -> None:
    with trio.fail_after(180):
        result = await trio.run_process([sys.executable, "-c", PROGRAM], capture_stdout=True)
    figures = json.loads(result.stdout.decode().strip().splitlines()[-1])
    print("\n", figures)
    assert figures["acked"] == figures["handled"] == 8000
    assert figures["overloaded"] > 0  # senders were told to back off...
    assert figures["refused"] > 0
    # ...so at most ~200 pending envelopes of 4 KiB (plus 64 waiting senders) are ever held:
    # the peak stays within a few tens of MB of the start, never 8000 x 4 KiB and more.
    assert figures["peak_rss_mb"] - figures["start_rss_mb"] < 40
