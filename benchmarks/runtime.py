"""actr_trio subjects for the benchmarks (issues 5 and 10): W1..W8 through the public API.

In process (W1-W4, here): nodes on one ``LocalRealm`` (in-memory signaling, the real
mailbox/scheduler/gates). W3's mailbox alone, without nodes: ``benchmarks/_runtime_mailbox.py``.
Across processes (W5-W7) and node start (W8): ``benchmarks/_runtime_net.py``. Both are imported
here so that importing this module registers every runtime subject. Shared pieces:
``benchmarks/_runtime_common.py``.

W1 measures both ways of telling: one ``tell`` per message from ``SENDERS`` sender tasks
(``actr_trio``), and ``tell_many`` batches of ``TELL_MANY_BATCH`` from one task
(``actr_trio-tell_many``). Where the runtime has no ``tell_many``, that row fails with an
error naming it (never skipped).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import trio

# Importing these registers the W3 mailbox-alone rows, the W5-W8 subjects and W9 (metrics).
import benchmarks._runtime_mailbox
import benchmarks._runtime_metrics
import benchmarks._runtime_net
import benchmarks.workloads  # noqa: F401  (the workload ids, also when imported on its own)
from actr_trio import ActrId, ActrRef
from actr_trio.testing import LocalRealm
from benchmarks._harness import Measurement, latency_figures, runtime
from benchmarks._runtime_common import (
    PAYLOAD,
    SENDERS,
    Burst,
    Sender,
    Sink,
    run_trio,
    split,
    warmup,
)

#: W4: one sender task per receiver node.
FANOUT_RECEIVERS: Final = 100
#: W1 tell_many: messages per call (issue 10's target is for batches of 64).
TELL_MANY_BATCH: Final = 64
TELL: Final = "bench.Sink.Tell"

TellMany = Callable[[ActrId, str, Sequence[bytes]], Awaitable[None]]


async def _tell_burst(ref: ActrRef, targets: list[tuple[ActrId, Sink]], per_target: int) -> Burst:
    """Send ``per_target`` tells to every target; with one target ``SENDERS`` tasks share
    them, with several there is one task per target."""
    for _, sink in targets:
        sink.arm(per_target)
    if len(targets) == 1:
        plan = [(targets[0][0], n) for n in split(per_target, SENDERS) if n]
    else:
        plan = [(target, per_target) for target, _ in targets]

    async def sender(target: ActrId, n: int) -> None:
        for _ in range(n):
            await ref.tell(target, TELL, PAYLOAD)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for target, n in plan:
            nursery.start_soon(sender, target, n)
    acked = time.perf_counter() - t0
    for _, sink in targets:
        await sink.done.wait()
    return Burst(acked, time.perf_counter() - t0)


async def _one_to_one(size: int, **sink_options: Any) -> Measurement:
    async with (
        LocalRealm("bench") as realm,
        realm.start(sink := Sink(), **sink_options) as a,
        realm.start(Sender()) as b,
    ):
        await _tell_burst(b, [(a.actr_id, sink)], warmup(size))
        burst = await _tell_burst(b, [(a.actr_id, sink)], size)
    return {"msgs_per_s": size / burst.handled, "acked_per_s": size / burst.acked}


@runtime(
    "W1",
    quick_size=20_000,
    full_size=60_000,
    label=f"LocalRealm, in-memory mailbox; {SENDERS} sender tasks, one tell per message, on one node -> one node, 64 B; clock stops when all handled",
)
def w1_tells(size: int) -> Measurement:
    return run_trio(_one_to_one, size)


def _tell_many_of(ref: ActrRef) -> TellMany:
    """``ref.tell_many``, or an error that says it is missing: the row fails, never skipped."""
    method = getattr(ref, "tell_many", None)
    if not callable(method):
        raise RuntimeError(
            "ActrRef.tell_many does not exist in this actr_trio (issue 10, item 3): "
            "the W1 tell_many row cannot run"
        )
    return cast("TellMany", method)


async def _tell_many_burst(ref: ActrRef, target: ActrId, sink: Sink, n: int) -> Burst:
    """``n`` tells in ``tell_many`` calls of ``TELL_MANY_BATCH`` messages, one after the other
    from one task (a fresh list each time, as a caller would build it)."""
    tell_many = _tell_many_of(ref)
    sink.arm(n)
    full, rest = divmod(n, TELL_MANY_BATCH)
    t0 = time.perf_counter()
    for _ in range(full):
        await tell_many(target, TELL, [PAYLOAD] * TELL_MANY_BATCH)
    if rest:
        await tell_many(target, TELL, [PAYLOAD] * rest)
    acked = time.perf_counter() - t0
    await sink.done.wait()
    return Burst(acked, time.perf_counter() - t0)


@runtime(
    "W1",
    "actr_trio-tell_many",
    label=f"LocalRealm, in-memory mailbox; one sender task, ref.tell_many batches of {TELL_MANY_BATCH}, 64 B; clock stops when all handled",
)
def w1_tell_many(size: int) -> Measurement:
    async def main() -> Burst:
        async with (
            LocalRealm("bench") as realm,
            realm.start(sink := Sink()) as a,
            realm.start(Sender()) as b,
        ):
            _tell_many_of(b)  # before any warm-up: a missing API fails at once
            await _tell_many_burst(b, a.actr_id, sink, warmup(size))
            return await _tell_many_burst(b, a.actr_id, sink, size)

    burst = run_trio(main)
    return {"msgs_per_s": size / burst.handled, "acked_per_s": size / burst.acked}


@runtime("W2", label="LocalRealm, in-memory mailbox; sequential ref.call echo, 64 B")
def w2_calls(size: int) -> Measurement:
    async def main() -> list[int]:
        samples: list[int] = []
        async with (
            LocalRealm("bench") as realm,
            realm.start(Sink()) as a,
            realm.start(Sender()) as b,
        ):
            target = a.actr_id
            warm = warmup(size)
            for i in range(warm + size):
                t0 = time.perf_counter_ns()
                reply = await b.call(target, "bench.Sink.Echo", PAYLOAD)
                t1 = time.perf_counter_ns()
                if reply != PAYLOAD:
                    raise RuntimeError(f"unexpected reply {reply!r:.40}")
                if i >= warm:
                    samples.append(t1 - t0)
        return samples

    return latency_figures(run_trio(main))


def _durable(size: int, synchronous: str) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="actr-bench-mailbox-") as tmp:
        data_dir = Path(tmp) / "sink"
        figures = run_trio(
            lambda: _one_to_one(size, data_dir=data_dir, mailbox_synchronous=synchronous)
        )
        _check_sqlite_written(data_dir)
    return figures


def _check_sqlite_written(data_dir: Path) -> None:
    """The durable rows must have gone through a SQLite file, not an in-memory mailbox."""
    for path in data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            with path.open("rb") as f:
                if f.read(16) == b"SQLite format 3\0":
                    return
    raise RuntimeError(f"no SQLite database in {data_dir}: the receiver's mailbox was not durable")


@runtime(
    "W3",
    "actr_trio-normal",
    quick_size=10_240,
    full_size=25_600,
    label=f"LocalRealm, receiver's SQLite mailbox (WAL, NORMAL) in /tmp; {SENDERS} sender tasks; ack after commit",
    compare_to=("sqlite-normal-batch256", "sqlite-normal-commit"),
)
def w3_normal(size: int) -> Measurement:
    return _durable(size, "NORMAL")


@runtime(
    "W3",
    "actr_trio-full",
    quick_size=5_120,
    full_size=12_800,
    label=f"LocalRealm, receiver's SQLite mailbox (WAL, FULL) in /tmp; {SENDERS} sender tasks; ack after commit",
    compare_to=("sqlite-full-batch256", "sqlite-full-commit"),
)
def w3_full(size: int) -> Measurement:
    return _durable(size, "FULL")


@runtime(
    "W4",
    quick_size=100,
    full_size=400,
    label=f"LocalRealm: 1 sender node ({FANOUT_RECEIVERS} tasks, one per receiver) -> {FANOUT_RECEIVERS} nodes; total msgs/s",
)
def w4_fanout(size: int) -> Measurement:
    async def main() -> tuple[float, float]:
        async with LocalRealm("bench") as realm, contextlib.AsyncExitStack() as stack:
            t_start = time.perf_counter()
            targets = []
            for _ in range(FANOUT_RECEIVERS):
                sink = Sink()
                ref = await stack.enter_async_context(realm.start(sink))
                targets.append((ref.actr_id, sink))
            start_s = time.perf_counter() - t_start
            sender = await stack.enter_async_context(realm.start(Sender()))
            await _tell_burst(sender, targets, max(1, size // 10))
            return (await _tell_burst(sender, targets, size)).handled, start_s

    elapsed, start_s = run_trio(main)
    return {
        "msgs_per_s": size * FANOUT_RECEIVERS / elapsed,
        "start_100_nodes_ms": start_s * 1e3,
    }
