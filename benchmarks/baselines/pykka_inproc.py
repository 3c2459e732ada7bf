"""pykka ThreadingActor in process: W1 tell throughput, W2 ask latency."""

from __future__ import annotations

import time
from typing import Any

from benchmarks._harness import Measurement, latency_figures, subject

PAYLOAD = b"x" * 64
_SYNC = "sync"


def _start_actor() -> Any:
    import pykka

    class Counter(pykka.ThreadingActor):
        use_daemon_thread = True  # never keeps the worker process alive

        def __init__(self) -> None:
            super().__init__()
            self.handled = 0

        def on_receive(self, message: Any) -> Any:
            if message == _SYNC:
                return self.handled
            self.handled += 1
            return message  # the reply when asked

    return Counter.start()


def _warmup(size: int) -> int:
    return max(1, min(size // 10, 2_000))


@subject("W1", "pykka", label="pykka ThreadingActor, tell() from the main thread")
def w1_pykka(size: int) -> Measurement:
    ref = _start_actor()
    try:
        for _ in range(_warmup(size)):
            ref.tell(PAYLOAD)
        base = ref.ask(_SYNC, timeout=60)
        t0 = time.perf_counter()
        for _ in range(size):
            ref.tell(PAYLOAD)
        handled = ref.ask(_SYNC, timeout=120)  # FIFO mailbox: returns once all were handled
        elapsed = time.perf_counter() - t0
    finally:
        ref.stop(timeout=10)
    if handled - base != size:
        raise RuntimeError(f"actor handled {handled - base} of {size}")
    return {"msgs_per_s": size / elapsed}


@subject("W2", "pykka-ask", label="pykka ThreadingActor, blocking ask() one at a time")
def w2_pykka_ask(size: int) -> Measurement:
    ref = _start_actor()
    samples: list[int] = []
    try:
        for i in range(_warmup(size) + size):
            t0 = time.perf_counter_ns()
            reply = ref.ask(PAYLOAD, timeout=10)
            t1 = time.perf_counter_ns()
            if reply != PAYLOAD:
                raise RuntimeError("bad reply")
            if i >= _warmup(size):
                samples.append(t1 - t0)
    finally:
        ref.stop(timeout=10)
    return latency_figures(samples)
