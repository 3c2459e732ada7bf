"""A victim node for the mailbox abuse tests: ``python mailboxnode.py --signaling URL [options]``.

Prints ``ready ACTR_ID`` once registered, then serves:

* ``mbx.Victim.Slow`` (a slow route: ``--slow`` seconds per envelope), ``mbx.Victim.Echo``;
* ``mbx.Victim.Hold``: handlers wait until released (what it accepted stays pending);
* ``mbx.Victim.Stats``: one JSON object with the mailbox's and the inbound gate's statistics,
  handler counts, ``rss_kb`` (VmRSS now) and ``peak_kb`` (VmHWM).

Signals stand in for the disk (they need nothing from the mailbox, which may be refusing):
SIGUSR1 caps the mailbox file at its current size (``SqliteMailbox.limit_pages(0)``: a full
disk) and prints ``disk full``; SIGUSR2 lifts the cap, releases the held handlers and prints
``disk free``. ``--capacity``, ``--share`` and ``--aging`` are the ``Config`` fields.
WARNING lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal

import attrs
import trio

from actr_trio import ActrRef, ActrSystem, ActrType, Context, Workload, route
from actr_trio._mailbox_sqlite import SqliteMailbox
from actr_trio.testing import network_config

REALM = "mbx"


def memory_kb() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss_kb" if name == "VmRSS" else "peak_kb"] = int(value.split()[0])
    return found


class Victim(Workload):
    actr_type = ActrType("mbx", "victim")

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.release = trio.Event()
        self.counts = {"slow": 0, "echo": 0, "hold": 0}
        self.ref: ActrRef | None = None

    @route("mbx.Victim.Slow")
    async def slow_route(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(self.slow)
        self.counts["slow"] += 1
        return b""

    @route("mbx.Victim.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        self.counts["echo"] += 1
        return request

    @route("mbx.Victim.Hold")
    async def hold(self, request: bytes, ctx: Context) -> bytes:
        await self.release.wait()
        self.counts["hold"] += 1
        return b""

    @route("mbx.Victim.Stats")
    async def stats(self, request: bytes, ctx: Context) -> bytes:
        assert self.ref is not None
        node = self.ref.statistics()
        figures = {
            "mailbox": attrs.asdict(node.mailbox),
            "inbound": attrs.asdict(node.inbound),
            "handled": self.counts,
            **memory_kb(),
        }
        return json.dumps(figures, default=str).encode()


async def disk_control(ref: ActrRef, victim: Victim) -> None:
    mailbox = ref.mailbox
    assert isinstance(mailbox, SqliteMailbox), "give it a --data-dir"
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                await mailbox.limit_pages(0)
                print("disk full", flush=True)
            else:
                await mailbox.limit_pages(None)
                victim.release.set()
                print("disk free", flush=True)


async def serve(args: argparse.Namespace) -> None:
    options: dict[str, object] = {"mailbox_capacity": args.capacity}
    if args.share is not None:
        options["mailbox_sender_share"] = args.share
    if args.aging is not None:
        options["aging"] = args.aging
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    config = network_config(args.signaling, realm=REALM, **options)
    victim = Victim(args.slow)
    async with ActrSystem(config).attach(victim).start() as ref:
        victim.ref = ref
        async with trio.open_nursery() as nursery:
            if args.data_dir is not None:
                nursery.start_soon(disk_control, ref, victim)
            print(f"ready {ref.actr_id}", flush=True)
            await ref.wait_for_shutdown()
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--share", type=float)
    parser.add_argument("--aging", type=int)
    parser.add_argument("--slow", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    trio.run(serve, args)


if __name__ == "__main__":
    main()
