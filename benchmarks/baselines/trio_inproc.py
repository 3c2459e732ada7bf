"""Raw Trio in process: W1 tells, W2 request/response, W4 fan-out.

What a user would write without a runtime: a task per receiver and memory channels, one
message received at a time (``async for``), no durability, no envelope encoding.
"""

from __future__ import annotations

import time

import trio

from benchmarks._harness import Measurement, latency_figures, subject

PAYLOAD = b"x" * 64
# Bounded buffer so the producer runs ahead a little, as an actor mailbox would; receive()
# still checkpoints once per message. (Buffer 0 forces a task switch per message.)
CHANNEL_BUFFER = 1024
FANOUT_RECEIVERS = 100
#: W1: as many sender tasks as the runtime's per-message row uses.
SENDERS = 256


def _warmup(size: int) -> int:
    return max(1, min(size // 10, 2_000))


async def _tell_round(n: int, senders: int = 1) -> float:
    """``n`` messages into one channel from ``senders`` tasks; seconds until all were handled."""
    send, recv = trio.open_memory_channel[bytes](CHANNEL_BUFFER)
    handled = 0

    async def consumer() -> None:
        nonlocal handled
        async with recv:
            async for msg in recv:
                handled += len(msg) > 0

    async def sender(k: int) -> None:
        for _ in range(k):
            await send.send(PAYLOAD)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        async with send:
            if senders == 1:
                await sender(n)
            else:
                async with trio.open_nursery() as producers:
                    for k in _split(n, senders):
                        producers.start_soon(sender, k)
    elapsed = time.perf_counter() - t0
    if handled != n:
        raise RuntimeError(f"consumer handled {handled} of {n}")
    return elapsed


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts) if base or i < extra]


def _tells(size: int, senders: int) -> Measurement:
    async def main() -> float:
        await _tell_round(_warmup(size), senders)
        return await _tell_round(size, senders)

    elapsed = trio.run(main)
    return {"msgs_per_s": size / elapsed}


@subject(
    "W1", "raw-trio", label="Trio task + memory channel (buffer 1024), one receive() per message"
)
def w1_raw_trio(size: int) -> Measurement:
    return _tells(size, 1)


@subject(
    "W1",
    f"raw-trio-{SENDERS}",
    label=f"{SENDERS} Trio sender tasks -> one memory channel (buffer 1024) -> one receiver task",
)
def w1_raw_trio_senders(size: int) -> Measurement:
    return _tells(size, SENDERS)


class _Request:
    __slots__ = ("done", "payload", "reply")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.reply: bytes | None = None
        self.done = trio.Event()


@subject("W2", "raw-trio-event", label="server task; reply in the request object + trio.Event")
def w2_raw_trio_event(size: int) -> Measurement:
    async def main() -> list[int]:
        send, recv = trio.open_memory_channel[_Request](CHANNEL_BUFFER)

        async def server() -> None:
            async with recv:
                async for req in recv:
                    req.reply = req.payload
                    req.done.set()

        samples: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            async with send:
                for i in range(_warmup(size) + size):
                    t0 = time.perf_counter_ns()
                    req = _Request(PAYLOAD)
                    await send.send(req)
                    await req.done.wait()
                    t1 = time.perf_counter_ns()
                    if req.reply is None:
                        raise RuntimeError("no reply")
                    if i >= _warmup(size):
                        samples.append(t1 - t0)
        return samples

    return latency_figures(trio.run(main))


@subject("W2", "raw-trio-channel", label="server task; reply through a per-request memory channel")
def w2_raw_trio_channel(size: int) -> Measurement:
    async def main() -> list[int]:
        send, recv = trio.open_memory_channel[tuple[bytes, trio.MemorySendChannel[bytes]]](
            CHANNEL_BUFFER
        )

        async def server() -> None:
            async with recv:
                async for payload, reply_to in recv:
                    await reply_to.send(payload)

        samples: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            async with send:
                for i in range(_warmup(size) + size):
                    t0 = time.perf_counter_ns()
                    reply_send, reply_recv = trio.open_memory_channel[bytes](1)
                    await send.send((PAYLOAD, reply_send))
                    await reply_recv.receive()
                    t1 = time.perf_counter_ns()
                    if i >= _warmup(size):
                        samples.append(t1 - t0)
        return samples

    return latency_figures(trio.run(main))


async def _fanout_round(per_receiver: int) -> float:
    handled = [0] * FANOUT_RECEIVERS
    pairs = [trio.open_memory_channel[bytes](CHANNEL_BUFFER) for _ in range(FANOUT_RECEIVERS)]

    async def receiver(idx: int, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        async with recv:
            async for msg in recv:
                handled[idx] += len(msg) > 0

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for idx, (_, recv) in enumerate(pairs):
            nursery.start_soon(receiver, idx, recv)
        sends = [s for s, _ in pairs]
        for _ in range(per_receiver):
            for s in sends:
                await s.send(PAYLOAD)
        for s in sends:
            await s.aclose()
    elapsed = time.perf_counter() - t0
    if sum(handled) != per_receiver * FANOUT_RECEIVERS:
        raise RuntimeError(f"handled {sum(handled)} of {per_receiver * FANOUT_RECEIVERS}")
    return elapsed


@subject("W4", "raw-trio", label="one sender task, 100 receiver tasks with a memory channel each")
def w4_raw_trio(size: int) -> Measurement:
    async def main() -> float:
        await _fanout_round(max(1, size // 10))
        return await _fanout_round(size)

    elapsed = trio.run(main)
    return {"msgs_per_s": size * FANOUT_RECEIVERS / elapsed}
