"""The mailbox under abuse (issue 13 items 4 and 5), over real WebRTC between processes.

A real signaling server process, a victim node process (``mailboxnode.py``) with a durable
mailbox, and nodes in this process as the peers.

* **Priority abuse.** One peer sends 150 HIGH tells to a slow route (50 ms each: 7.5 s of
  work) while another peer calls a NORMAL route five times a second. The flooder holds at
  most its share of the HIGH queue (``mailbox_sender_share`` 0.25 of a capacity of 40: 10)
  and is refused (``Overloaded``, code ``sender_share``) past it; it backs off and resends,
  and every tell gets in. Priority is strict by design, so what bounds the NORMAL calls' wait
  is ``aging`` (here 2: after two HIGH envelopes passed over a waiting NORMAL one, it runs):
  the calls succeed (>= 95 % within their 2 s deadline), the victim stays alive, and its
  memory grows by less than ``RSS_BOUND_MB``.
* **Disk full.** The victim's mailbox file is capped at its current size (SIGUSR1: SQLite
  answers ``SQLITE_FULL`` as on a full disk). Envelopes held by a blocked handler keep it
  full; new ones are refused with ``Overloaded`` (code ``storage``), the process keeps
  running, and once space is back (SIGUSR2) another peer's tells get in and every envelope
  acknowledged before is handled.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import pytest
import trio
from netprocs import HERE, Processes, read_line_matching

from actr_trio import ActrId, ActrRef, ActrSystem, ActrType, Priority, Workload
from actr_trio.errors import ActrError, Overloaded
from actr_trio.testing import network_config

pytestmark = pytest.mark.integration

REALM = "mbx"
FLOOD = 150  # HIGH tells to the slow route
SLOW = 0.05  # seconds per slow envelope
CAPACITY = 40  # per priority; the share of 0.25 is 10 per sender
AGING = 2
CALL_EVERY = 0.2  # the other peer's NORMAL calls...
DEADLINE = 2.0  # ...and each one's deadline
# The victim's RSS may grow this much over the flood: at most 10 + 10 pending envelopes per
# priority of the flooder and the caller, two links, the flooder's resends decoded and
# refused. Measured here: under 1 MB (peak over the level before the flood).
RSS_BOUND_MB = 20


class Peer(Workload):
    actr_type = ActrType("mbx", "peer")


async def start_victim(
    processes: Processes, url: str, *options: str
) -> tuple[trio.Process, ActrId]:
    proc = await processes.start(
        sys.executable, str(HERE / "mailboxnode.py"), "--signaling", url, *options
    )
    with trio.fail_after(30):
        line = await read_line_matching(proc, lambda text: text.startswith("ready "))
    return proc, ActrId.parse(line.split()[1])


async def victim_stats(ref: ActrRef, victim: ActrId) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(
        await ref.call(victim, "mbx.Victim.Stats", b"", timeout=10)
    )
    return figures


async def test_a_high_flood_from_one_peer_is_held_to_its_share_and_normal_calls_go_on(
    processes: Processes, signaling_url: str, tmp_path: Any
) -> None:
    victim_proc, victim = await start_victim(
        processes,
        signaling_url,
        *("--data-dir", str(tmp_path / "victim"), "--capacity", str(CAPACITY)),
        *("--aging", str(AGING), "--slow", str(SLOW)),
    )
    config = network_config(signaling_url, realm=REALM)
    acked = 0
    calls_ok, calls_failed = 0, []
    with trio.fail_after(60):
        async with (
            ActrSystem(config).attach(Peer()).start() as flooder,
            ActrSystem(config).attach(Peer()).start() as caller,
        ):
            # Links up first: the flood measures the mailbox, not the link set-up.
            await flooder.call(victim, "mbx.Victim.Echo", b"hi", timeout=10)
            before = await victim_stats(caller, victim)
            flood_done = trio.Event()

            async def tell(n: int) -> None:
                nonlocal acked
                await flooder.tell(
                    victim, "mbx.Victim.Slow", b"%d" % n, priority=Priority.HIGH, timeout=30
                )
                acked += 1

            async def flood() -> None:
                async with trio.open_nursery() as tells:
                    for n in range(FLOOD):
                        tells.start_soon(tell, n)
                flood_done.set()

            async def call(n: int) -> None:
                nonlocal calls_ok
                try:
                    await caller.call(victim, "mbx.Victim.Echo", b"%d" % n, timeout=DEADLINE)
                    calls_ok += 1
                except ActrError as exc:
                    calls_failed.append(repr(exc))

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                n = 0
                while not flood_done.is_set():  # calls for as long as the flood lasts
                    nursery.start_soon(call, n)
                    n += 1
                    with trio.move_on_after(CALL_EVERY):
                        await flood_done.wait()
            elapsed = trio.current_time() - start
            # Every tell is committed when acked; the last few may still wait for the slow
            # route (a NORMAL stats call may pass them: aging). Polling another process's
            # figures: there is no event to wait on across processes.
            after = await victim_stats(caller, victim)
            while after["handled"]["slow"] < acked:  # noqa: ASYNC110
                await trio.sleep(0.1)
                after = await victim_stats(caller, victim)
            overloaded = flooder.statistics().outbound.overloaded
    mailbox = after["mailbox"]
    figures = {
        "flood_s": round(elapsed, 1),
        "acked": acked,
        "handled_slow": after["handled"]["slow"],
        "calls_ok": calls_ok,
        "calls_failed": len(calls_failed),
        "flooder_overloaded": overloaded,
        "refused_sender_share": mailbox["refused_sender_share"],
        "refused": mailbox["refused"],
        "rss_before_mb": before["rss_kb"] / 1024,
        "peak_after_mb": after["peak_kb"] / 1024,
    }
    print(f"\npriority flood: {json.dumps(figures, sort_keys=True)}")
    assert victim_proc.returncode is None  # alive
    assert acked == after["handled"]["slow"] == FLOOD  # the flood itself got in, in the end
    assert calls_ok + len(calls_failed) >= 10
    assert calls_ok >= 0.95 * (calls_ok + len(calls_failed)), calls_failed[:5]
    # Refused past its share (the victim counts it, the flooder backed off and resent).
    assert mailbox["refused_sender_share"] > 0
    assert overloaded > 0
    assert after["peak_kb"] - before["rss_kb"] < RSS_BOUND_MB * 1024, figures


async def test_a_full_disk_refuses_with_overloaded_and_the_node_resumes_when_space_returns(
    processes: Processes, signaling_url: str, tmp_path: Any
) -> None:
    victim_proc, victim = await start_victim(
        processes, signaling_url, "--data-dir", str(tmp_path / "victim")
    )
    config = network_config(signaling_url, realm=REALM)
    payload = bytes(16 * 1024)  # each needs new pages of the file
    held = 0
    with trio.fail_after(60):
        async with (
            ActrSystem(config).attach(Peer()).start() as a,
            ActrSystem(config).attach(Peer()).start() as b,
        ):
            await a.call(victim, "mbx.Victim.Echo", b"hi", timeout=10)
            await b.call(victim, "mbx.Victim.Echo", b"hi", timeout=10)
            # The first Hold blocks the state path: what is accepted after it stays pending.
            await a.tell(victim, "mbx.Victim.Hold", b"first", timeout=10)
            victim_proc.send_signal(signal.SIGUSR1)
            with trio.fail_after(10):
                await read_line_matching(victim_proc, lambda text: text == "disk full")
            # Free pages in the file take a few more, then the disk is full: refused.
            with pytest.raises(Overloaded):  # noqa: PT012 - the loop ends with the refusal
                for _ in range(50):
                    await a.tell(victim, "mbx.Victim.Hold", payload, timeout=1)
                    held += 1
            with pytest.raises(Overloaded):
                await b.tell(victim, "mbx.Victim.Hold", payload, timeout=1)
            assert victim_proc.returncode is None  # still running, not "disk is full"
            victim_proc.send_signal(signal.SIGUSR2)  # space again (and the handlers go on)
            with trio.fail_after(10):
                await read_line_matching(victim_proc, lambda text: text == "disk free")
            for _ in range(5):  # another peer's tells get in (its backoff rides out ours)
                await b.tell(victim, "mbx.Victim.Hold", payload, timeout=10)
            stats = await victim_stats(b, victim)
            while stats["handled"]["hold"] < 1 + held + 5:  # noqa: ASYNC110 - another process
                await trio.sleep(0.1)
                stats = await victim_stats(b, victim)
    mailbox = stats["mailbox"]
    figures = {
        "held_before_full": held,
        "handled_hold": stats["handled"]["hold"],
        "refused_storage": mailbox["refused_storage"],
        "storage_errors": mailbox["storage_errors"],
        "storage_failing": mailbox["storage_failing"],
    }
    print(f"\ndisk full: {json.dumps(figures, sort_keys=True)}")
    assert victim_proc.returncode is None
    assert mailbox["refused_storage"] > 0
    assert mailbox["storage_errors"] > 0
    assert not mailbox["storage_failing"]
    # Everything acknowledged was handled: before the disk filled, while full, after.
    assert stats["handled"]["hold"] == 1 + held + 5
