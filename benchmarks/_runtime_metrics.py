"""W9: what Prometheus metrics (``Config.metrics``) cost on the in-process call path.

Two caller/echo pairs on one ``LocalRealm``, one pair with metrics on (both nodes serve
``/metrics`` on a free port), one without. Sequential ``ref.call`` echoes in short rounds, each
round measuring both pairs back to back (off first in even rounds, on first in odd ones). The
headline is the median over the rounds of (calls/s on) / (calls/s off): robust to bursts of
other load on a shared machine, which a ratio of totals is not. Sequential calls are the worst
case: nothing else hides the per-call cost of counting.
"""

from __future__ import annotations

import statistics
import time
from typing import Final

from actr_trio import ActrRef
from actr_trio.testing import LocalRealm
from benchmarks._harness import Measurement, runtime
from benchmarks._runtime_common import PAYLOAD, Sender, Sink, run_trio, warmup

#: Rounds; each measures size / ROUNDS calls per setting.
ROUNDS: Final = 40
ECHO: Final = "bench.Sink.Echo"


async def _calls(caller: ActrRef, target: ActrRef, n: int) -> float:
    """Seconds ``n`` sequential echo calls take."""
    t0 = time.perf_counter()
    for _ in range(n):
        await caller.call(target.actr_id, ECHO, PAYLOAD)
    return time.perf_counter() - t0


@runtime("W9", label="LocalRealm, in-memory mailbox; sequential ref.call echo, metrics on vs off")
def w9_metrics_overhead(size: int) -> Measurement:
    per_round = max(1, size // ROUNDS)

    async def main() -> list[tuple[float, float]]:
        on = {"metrics": "127.0.0.1:0"}
        async with (
            LocalRealm("bench") as realm,
            realm.start(Sink()) as sink_off,
            realm.start(Sender()) as caller_off,
            realm.start(Sink(), **on) as sink_on,
            realm.start(Sender(), **on) as caller_on,
        ):
            if sink_on.metrics_address is None or sink_off.metrics_address is not None:
                raise RuntimeError("metrics are not on (only) where the row needs them")
            await _calls(caller_off, sink_off, warmup(size))
            await _calls(caller_on, sink_on, warmup(size))
            rounds = []
            for i in range(ROUNDS):
                if i % 2:
                    on_s = await _calls(caller_on, sink_on, per_round)
                    off_s = await _calls(caller_off, sink_off, per_round)
                else:
                    off_s = await _calls(caller_off, sink_off, per_round)
                    on_s = await _calls(caller_on, sink_on, per_round)
                rounds.append((off_s, on_s))
            return rounds

    rounds = run_trio(main)
    off_total = sum(off for off, _ in rounds)
    on_total = sum(on for _, on in rounds)
    calls = per_round * ROUNDS
    return {
        "on_off_ratio": statistics.median(off / on for off, on in rounds),
        "total_ratio": off_total / on_total,
        "calls_per_s_off": calls / off_total,
        "calls_per_s_on": calls / on_total,
    }
