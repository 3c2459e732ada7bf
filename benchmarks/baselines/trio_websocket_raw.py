"""Raw trio-websocket between two processes on 127.0.0.1 (W5, W6, W7, W8): a Trio client here,
a trio-websocket server in a child process (``benchmarks.baselines._ws_peer``).

The same commands and clocks as the raw aiortc rows: W5 ping-pong 64 B; W6 100-byte records,
one per message and packed 160 per message, until the server confirms; W7 16 KiB messages,
sender start -> the server's last delivered byte (system-wide monotonic clock). TCP is ordered
and reliable: nothing is dropped. W8 ``raw-trio-websocket-child``: spawn the child (it imports
trio and trio-websocket, listens, prints its port), connect, one echo answered: what the
runtime's ``actr_trio-ws`` row does, without the node (signaling, identity, mailbox, the wire).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from benchmarks._harness import Measurement, latency_figures, subject
from benchmarks.baselines._proc import python_child, read_line

T = TypeVar("T")

PING = b"x" * 64
RECORD = b"x" * 100
PACKED = 160
CHUNK = b"x" * 16384
WARMUP = 200
SUBJECT = "raw-trio-websocket"


def _run(body: Callable[[WebSocketConnection], Awaitable[T]], timeout: float) -> T:
    with python_child("benchmarks.baselines._ws_peer") as proc:
        assert proc.stdout is not None
        port = int(read_line(proc.stdout, timeout=20))

        async def main() -> T:
            with trio.fail_after(timeout):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    return await body(ws)

        return trio.run(main)


@subject(
    "W5",
    SUBJECT,
    label="trio-websocket client -> echo server in a child process, 127.0.0.1, 64 B",
    timeout_s=60,
)
def w5_raw_trio_websocket(size: int) -> Measurement:
    async def body(ws: WebSocketConnection) -> list[int]:
        await ws.send_message("echo")
        samples: list[int] = []
        for i in range(WARMUP + size):
            t0 = time.perf_counter_ns()
            await ws.send_message(PING)
            reply = await ws.get_message()
            t1 = time.perf_counter_ns()
            if reply != PING:
                raise RuntimeError(f"unexpected reply {reply!r:.40}")
            if i >= WARMUP:
                samples.append(t1 - t0)
        return samples

    return latency_figures(_run(body, 50))


async def _sink(ws: WebSocketConnection, n: int, payload: bytes) -> float:
    """``n`` messages; seconds until the server confirmed all of them."""
    await ws.send_message(f"sink:{n}")
    t0 = time.perf_counter()
    for _ in range(n):
        await ws.send_message(payload)
    reply = await ws.get_message()
    elapsed = time.perf_counter() - t0
    if reply != f"done:{n}:{n * len(payload)}":
        raise RuntimeError(f"server answered {reply!r:.60}")
    return elapsed


def _throughput(messages: int, payload: bytes, records: int) -> Measurement:
    async def body(ws: WebSocketConnection) -> float:
        await _sink(ws, max(1, messages // 10), payload)
        return await _sink(ws, messages, payload)

    elapsed = _run(body, 100)
    return {
        "msgs_per_s": messages * records / elapsed,
        "MB_per_s": messages * len(payload) / elapsed / 1e6,
    }


@subject(
    "W6",
    SUBJECT,
    label="trio-websocket, two processes, 100 B messages, one per send",
    timeout_s=120,
)
def w6_raw_trio_websocket(size: int) -> Measurement:
    return _throughput(size, RECORD, 1)


@subject(
    "W6",
    f"{SUBJECT}-packed",
    label=f"trio-websocket, two processes, 100 B records packed {PACKED} per message",
    timeout_s=120,
)
def w6_raw_trio_websocket_packed(size: int) -> Measurement:
    return _throughput(max(1, size // PACKED), RECORD * PACKED, PACKED)


async def _tally(ws: WebSocketConnection, n: int) -> tuple[float, int]:
    """``n`` chunks; (sender start -> server's last delivered byte, bytes delivered)."""
    await ws.send_message("tally")
    t0 = time.monotonic()
    for _ in range(n):
        await ws.send_message(CHUNK)
    await ws.send_message("report")
    _, count, nbytes, last = str(await ws.get_message()).split(":")
    if int(count) != n:
        raise RuntimeError(f"server counted {count} of {n}")
    return float(last) - t0, int(nbytes)


@subject(
    "W7",
    SUBJECT,
    label="trio-websocket, two processes, 16 KiB messages; bytes / sender start -> last delivered byte",
    timeout_s=120,
)
def w7_raw_trio_websocket(size: int) -> Measurement:
    async def body(ws: WebSocketConnection) -> tuple[float, int]:
        await _tally(ws, max(1, size // 10))
        return await _tally(ws, size)

    elapsed, nbytes = _run(body, 100)
    return {"MB_per_s": nbytes / elapsed / 1e6}


#: W8: fresh processes per repetition (as the runtime rows' ``PROCESS_STARTS``).
PROCESS_STARTS = 3


def _first_echo_ms() -> float:
    """Spawn -> imports -> listening -> connected -> one echo answered, in ms."""
    t0 = time.perf_counter()
    with python_child("benchmarks.baselines._ws_peer") as proc:
        assert proc.stdout is not None
        port = int(read_line(proc.stdout, timeout=20))

        async def main() -> None:
            with trio.fail_after(20):
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.send_message(PING)
                    if await ws.get_message() != PING:
                        raise RuntimeError("unexpected echo")

        trio.run(main)
        return (time.perf_counter() - t0) * 1e3


@subject(
    "W8",
    f"{SUBJECT}-child",
    label=f"fresh trio-websocket child process: imports, listens, prints its port; connect, one echo (median of {PROCESS_STARTS})",
    timeout_s=120,
)
def w8_raw_trio_websocket_child(size: int) -> Measurement:
    return {
        "process_first_rpc_ms": statistics.median(_first_echo_ms() for _ in range(PROCESS_STARTS))
    }
