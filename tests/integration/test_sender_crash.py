"""Issue 6: a sender SIGKILLed with calls outstanding resends them after a restart (same
request ids, kept in its data dir); the receiver handles each exactly once. On both network
lanes (WebRTC, direct WebSocket)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio
from netprocs import HERE, Processes, lane_argv, netnode_argv, read_line_matching


async def test_outstanding_requests_survive_a_sender_crash(
    processes: Processes, signaling_url: str, tmp_path: Path, lane: str
) -> None:
    log = tmp_path / "handled.log"
    sender_dir = tmp_path / "sender"
    await processes.start(
        *netnode_argv("receiver", signaling_url, "--log", str(log), *lane_argv(lane))
    )
    sender = [sys.executable, str(HERE / "netsender.py"), *lane_argv(lane)]
    with trio.fail_after(120):
        first = await processes.start(
            *sender, "send", str(sender_dir), "--signaling", signaling_url
        )
        in_flight = await read_line_matching(first, lambda line: line.startswith("in flight"))
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await processes.start(
            *sender, "recover", str(sender_dir), "--signaling", signaling_url
        )
        line = await read_line_matching(second, lambda line: line.startswith("recovered"))
        await second.wait()
    assert in_flight == f"in flight over {lane}"
    assert line == "recovered 8"
    handled = [entry.split() for entry in log.read_text().splitlines()]
    request_ids = [rid for rid, _ in handled]
    assert len(request_ids) == len(set(request_ids)) == 8  # each outstanding request once
    assert sorted(int(payload) for _, payload in handled) == list(range(8))
