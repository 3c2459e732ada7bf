"""The mixed flood (``nox -s soak``): every abuse of issue 13 at once, for minutes.

A signaling server process (``sigserver.py``: its statistics and RSS on request), a victim node
process (``streamnode.py``) and, in this process, the attackers and one legitimate caller:

* **offers**: registered identities relaying genuine WebRTC offers to the victim, 4 a second
  each (the victim's link admission refuses them past its rates);
* **discovery**: raw members sending discover requests without reading the answers (the
  server's per-connection budgets refuse or disconnect them);
* **idle connections**: connections that only say Hello, opened all along (capped and timed
  out by the server);
* **streams**: a peer node sending chunks for distinct stream ids the victim never registered
  (refused, forgotten) and announcing tracks past ``max_tracks_per_peer``;
* **HIGH tells**: a peer node telling a slow route at HIGH priority as fast as it is let (held
  to its share of the mailbox, ``Overloaded`` past it).

Meanwhile another peer calls the victim 5 times a second. Every 30 s and at the end it prints
one JSON line: the victim's RSS (now, peak, growth), the legitimate calls' success rate, and the
refusal counters of the victim and the server. It asserts what the short tests assert: the
victim alive, >= 95 % of the legitimate calls within their deadline, the victim's RSS growth
under ``RSS_BOUND_MB``, refusal counters non-zero.

Only with ``--soak``; ``--flood-seconds`` sets the length (default 180).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from netprocs import HERE, Processes, read_line_matching
from test_link_admission import REALM, attackers
from test_signaling_abuse import blast_discover, raw_member, say_hello_and_wait, server_process

from actr_trio import ActrId, ActrRef, ActrSystem, ActrType, Lane, Priority, Workload
from actr_trio._envelope import Chunk
from actr_trio.errors import ActrError
from actr_trio.testing import network_config
from actr_trio.transport._webrtc_link import TRACK_KINDS

pytestmark = pytest.mark.integration

ECHO = "abuse.Victim.Echo"
CALL_EVERY = 0.2
DEADLINE = 2.0
REPORT_EVERY = 30.0
OFFERERS = 8
DISCOVERERS = 4
# The victim's RSS may grow this much over the whole flood: its links (max_links, ~0.5 MB
# each), the flooders' share of the mailbox, the refusals kept per link, allocator noise.
RSS_BOUND_MB = 80


class Peer(Workload):
    actr_type = ActrType("abuse", "peer")


async def victim_stats(ref: ActrRef, victim: ActrId) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(
        await ref.call(victim, "abuse.Victim.Stats", b"", timeout=10)
    )
    return figures


class Flood:
    """What the attackers did, and the legitimate calls' outcomes."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.calls_ok = 0
        self.calls_failed: list[str] = []
        self.sent = {"offers": 0, "discover": 0, "idle": 0, "chunks": 0, "tracks": 0, "high": 0}

    @property
    def running(self) -> bool:
        return trio.current_time() < self.until


async def offers(url: str, victim: ActrId, flood: Flood) -> None:
    payload = base64.b64encode(os.urandom(3000)).decode()  # an offer's size; no binding
    async with attackers(url, OFFERERS) as crowd, trio.open_nursery() as nursery:
        for attacker in crowd:
            nursery.start_soon(attacker.flood, victim, lambda _: payload, flood.until)
    flood.sent["offers"] = sum(a.sent for a in crowd)


async def discovery(url: str, flood: Flood) -> None:
    async def one() -> None:
        while flood.running:
            async with raw_member(url, realm=REALM, secret=None) as (ws, protocol):
                flood.sent["discover"] += await blast_discover(ws, protocol, 2000)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for _ in range(DISCOVERERS):
            nursery.start_soon(one)


async def idle_connections(url: str, flood: Flood) -> None:
    outcomes: list[str] = []
    async with trio.open_nursery() as nursery:
        while flood.running:
            for _ in range(50):
                nursery.start_soon(say_hello_and_wait, url, "127.0.0.2", outcomes, lambda: None)
                flood.sent["idle"] += 1
            await trio.sleep(1)
        nursery.cancel_scope.cancel()


async def streams(attacker: ActrRef, victim: ActrId, flood: Flood) -> None:
    gate = attacker._core.outgate
    transport = attacker._core.transport
    link = getattr(transport, "_webrtc", transport)._links[victim]
    kind = bytes([TRACK_KINDS["video"]])
    n = 0
    while flood.running:
        for _ in range(500):
            n += 1
            await gate.send_chunk(victim, Lane.LATENCY_FIRST, Chunk(f"junk-{n}", 1, b"x", False, n))
        link.send_control(b"T" + kind + f"m{n}\0junk-{n}".encode())
        flood.sent["chunks"] = n
        flood.sent["tracks"] += 1
        await trio.sleep(0.05)


async def high_tells(attacker: ActrRef, victim: ActrId, flood: Flood) -> None:
    async def tell(n: int) -> None:
        # A refused tell is the flooder's loss; what is measured is the victim and the caller.
        with contextlib.suppress(ActrError):
            await attacker.tell(
                victim, "abuse.Victim.Slow", b"%d" % n, priority=Priority.HIGH, timeout=30
            )

    async with trio.open_nursery() as nursery:
        n = 0
        while flood.running:
            nursery.start_soon(tell, n)
            n += 1
            flood.sent["high"] = n
            await trio.sleep(0.02)


async def legit_calls(caller: ActrRef, victim: ActrId, flood: Flood) -> None:
    async def call(n: int) -> None:
        try:
            await caller.call(victim, ECHO, b"%d" % n, timeout=DEADLINE)
            flood.calls_ok += 1
        except ActrError as exc:
            flood.calls_failed.append(repr(exc))

    async with trio.open_nursery() as nursery:
        n = 0
        while flood.running:
            nursery.start_soon(call, n)
            n += 1
            await trio.sleep(CALL_EVERY)


def report(
    flood: Flood, before: dict[str, Any], victim: dict[str, Any], server: dict[str, Any]
) -> dict[str, Any]:
    total = flood.calls_ok + len(flood.calls_failed)
    server_refusals = {
        k: v
        for k, v in server.items()
        if isinstance(v, int) and v and any(w in k for w in ("refused", "limited", "timeout"))
    }
    return {
        "victim_rss_mb": round(victim["rss_kb"] / 1024, 1),
        "victim_peak_mb": round(victim["peak_kb"] / 1024, 1),
        "victim_growth_mb": round((victim["peak_kb"] - before["rss_kb"]) / 1024, 1),
        "calls": total,
        "calls_ok_pct": round(100 * flood.calls_ok / total, 1) if total else None,
        "sent": flood.sent,
        "victim_refusals": {
            "streams_unrouted": victim["streams"]["unrouted"],
            "streams_refused": victim["streams"]["refused"],
            "tracks_refused": victim["malformed"],
            "inbound_refused": victim["inbound"]["refused"],
            "mailbox_refused": victim["mailbox"].get("refused"),
            "mailbox_refused_sender_share": victim["mailbox"].get("refused_sender_share"),
            "admission": victim["admission"],
        },
        "server_rss_mb": round(server.get("rss_kb", 0) / 1024, 1),
        "server_refusals": server_refusals,
    }


async def test_a_mixed_flood_for_minutes(
    soak: bool, flood_seconds: float, processes: Processes, tmp_path: Path
) -> None:
    if not soak:
        pytest.skip("a soak run: nox -s soak (or pytest --soak)")
    async with server_process(
        tmp_path / "signaling.log", "--hello-timeout", "4", "--max-connections-per-address", "500"
    ) as server:
        proc = await processes.start(
            sys.executable, str(HERE / "streamnode.py"), "--signaling", server.url,
            "--realm", REALM, "--capacity", "40", "--aging", "2", "--slow", "0.05",
        )  # fmt: skip
        with trio.fail_after(30):
            line = await read_line_matching(proc, lambda text: text.startswith("ready "))
        victim = ActrId.parse(line.split()[1])
        config = network_config(server.url, realm=REALM)
        with trio.fail_after(flood_seconds + 120):
            async with (
                ActrSystem(config).attach(Peer()).start() as attacker,
                ActrSystem(config).attach(Peer()).start() as caller,
            ):
                await attacker.call(victim, ECHO, b"hi", timeout=10)
                await caller.call(victim, ECHO, b"hi", timeout=10)
                before = await victim_stats(caller, victim)
                flood = Flood(trio.current_time() + flood_seconds)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(offers, server.url, victim, flood)
                    nursery.start_soon(discovery, server.url, flood)
                    nursery.start_soon(idle_connections, server.url, flood)
                    nursery.start_soon(streams, attacker, victim, flood)
                    nursery.start_soon(high_tells, attacker, victim, flood)
                    nursery.start_soon(legit_calls, caller, victim, flood)
                    while flood.running:
                        with trio.move_on_at(min(flood.until, trio.current_time() + REPORT_EVERY)):
                            await trio.sleep_forever()
                        figures = report(
                            flood,
                            before,
                            await victim_stats(caller, victim),
                            await server.figures(),
                        )
                        print(f"\nmixed flood: {json.dumps(figures, sort_keys=True)}", flush=True)
                after = await victim_stats(caller, victim)
                final = report(flood, before, after, await server.figures())
    print(f"\nmixed flood, final: {json.dumps(final, sort_keys=True)}", flush=True)
    assert proc.returncode is None  # alive
    total = flood.calls_ok + len(flood.calls_failed)
    assert total >= flood_seconds / CALL_EVERY / 2
    assert flood.calls_ok >= 0.95 * total, flood.calls_failed[:5]
    assert after["peak_kb"] - before["rss_kb"] < RSS_BOUND_MB * 1024, final
    assert after["streams"]["unrouted"] > 0
    assert after["malformed"] > 0
    assert final["server_refusals"], final
