"""Raw Trio over loopback TCP (W5): client here, echo server in a child process."""

from __future__ import annotations

import time

import trio

from benchmarks._harness import Measurement, latency_figures, subject
from benchmarks.baselines._proc import python_child, read_line

PAYLOAD = b"x" * 64
WARMUP = 200


@subject(
    "W5",
    "raw-trio-tcp",
    label="Trio client -> Trio echo server in a child process, TCP 127.0.0.1, 64 B",
    quick_size=2_000,
    full_size=10_000,
    timeout_s=60,
)
def w5_raw_trio_tcp(size: int) -> Measurement:
    with python_child("benchmarks.baselines._tcp_echo_server") as proc:
        assert proc.stdout is not None
        port = int(read_line(proc.stdout, timeout=20))

        async def main() -> list[int]:
            samples: list[int] = []
            with trio.fail_after(50):
                stream = await trio.open_tcp_stream("127.0.0.1", port)  # TCP_NODELAY is set
                async with stream:
                    for i in range(WARMUP + size):
                        t0 = time.perf_counter_ns()
                        await stream.send_all(PAYLOAD)
                        got = 0
                        while got < len(PAYLOAD):
                            chunk = await stream.receive_some(65536)
                            if not chunk:
                                raise RuntimeError("server closed the connection")
                            got += len(chunk)
                        t1 = time.perf_counter_ns()
                        if i >= WARMUP:
                            samples.append(t1 - t0)
            return samples

        return latency_figures(trio.run(main))
