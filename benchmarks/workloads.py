"""The workloads of issue 5 (W1..W8), the targets of issues 5, 10 and 11, and the runtime
subjects each workload must have.

Headline figures (the key every subject of the workload must report for ratios):

=====  ==============  =====================================================================
 W1    msgs_per_s      one-way tells to one receiver, in process: one tell per message
                       (256 senders) and tell_many batches of 64
 W2    p50_us          sequential request/response in process (also p99_us)
 W3    msgs_per_s      durable tells through SQLite (WAL), NORMAL and FULL
 W4    msgs_per_s      fan-out, 100 receivers; size = tells per receiver; total msgs/s
 W5    p50_us          cross-process request/response on loopback (also p99_us)
 W6    msgs_per_s      cross-process one-way tells, 100-byte payloads
 W7    MB_per_s        cross-process 16 KiB chunks (MB = 10**6 bytes)
 W8    process_first_rpc_ms  fresh process -> registered -> first RPC answered (the runtime
                       also reports inproc_start_ms: LocalRealm node start)
 W9    on_off_ratio    sequential in-process ref.call throughput with Config.metrics on,
                       divided by the same with metrics off (same run; issue 14)
=====  ==============  =====================================================================

The baselines (``benchmarks/baselines/``) and the runtime subjects (``benchmarks/runtime.py``)
register themselves against these ids; see benchmarks/README.md. A target against a baseline
compares the runtime's median with the baseline's of the same run (``p50_us <= 1.3x
raw-trio-event``: at most 1.3 times its latency); a target is reported, met or not, and never
fails the run.
"""

from __future__ import annotations

from benchmarks._harness import REGISTRY, Target, Workload

ISSUE_5 = "issue 5"
ISSUE_10 = "issue 10"
ISSUE_11 = "issue 11"
ISSUES_5_10 = "issues 5, 10"

REGISTRY.add_workload(
    Workload(
        "W1",
        "one-way tells in process",
        headline="msgs_per_s",
        higher_is_better=True,
        quick_size=50_000,
        pin_cpu=True,
        full_size=200_000,
        runtimes=("actr_trio", "actr_trio-tell_many"),
        targets=(
            Target(
                "msgs_per_s", ">=", 1.0, baseline="raw-trio", runtime="actr_trio", source=ISSUE_10
            ),
            Target(
                "msgs_per_s",
                ">=",
                1.2,
                baseline="pykka",
                runtime="actr_trio-tell_many",
                source=ISSUE_10,
            ),
            Target("msgs_per_s", ">=", 250_000, runtime="actr_trio", source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W2",
        "request/response in process",
        headline="p50_us",
        higher_is_better=False,
        quick_size=5_000,
        pin_cpu=True,
        full_size=20_000,
        size_unit="requests",
        targets=(
            Target("p50_us", "<=", 1.3, baseline="raw-trio-event", source=ISSUE_10),
            Target("p50_us", "<=", 25, source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W3",
        "durable tells (SQLite WAL)",
        headline="msgs_per_s",
        higher_is_better=True,
        quick_size=25_600,
        full_size=102_400,
        runtimes=("actr_trio-normal", "actr_trio-full"),
        targets=(
            Target(
                "msgs_per_s",
                ">=",
                0.5,
                baseline="sqlite-normal-batch256",
                runtime="actr_trio-normal",
                source=ISSUES_5_10,
            ),
            Target(
                "msgs_per_s",
                ">=",
                0.5,
                baseline="sqlite-full-batch256",
                runtime="actr_trio-full",
                source=ISSUES_5_10,
            ),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W4",
        "fan-out 100 receivers",
        headline="msgs_per_s",
        higher_is_better=True,
        quick_size=500,
        pin_cpu=True,
        full_size=2_000,
        size_unit="tells per receiver",
        targets=(Target("msgs_per_s", ">=", 0.8, baseline="raw-trio", source=ISSUE_10),),
    )
)
REGISTRY.add_workload(
    Workload(
        "W5",
        "request/response cross-process",
        headline="p50_us",
        higher_is_better=False,
        quick_size=1_000,
        full_size=5_000,
        size_unit="requests",
        runtimes=("actr_trio", "actr_trio-ws"),
        targets=(
            Target(
                "p50_us", "<=", 1.3, baseline="raw-aiortc", runtime="actr_trio", source=ISSUE_11
            ),
            Target(
                "p50_us",
                "<=",
                1.5,
                baseline="raw-trio-websocket",
                runtime="actr_trio-ws",
                source=ISSUE_11,
            ),
            Target("p50_us", "<=", 450, runtime="actr_trio", source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W6",
        "one-way tells cross-process",
        headline="msgs_per_s",
        higher_is_better=True,
        quick_size=10_000,
        full_size=20_000,
        runtimes=("actr_trio", "actr_trio-tell_many", "actr_trio-ws", "actr_trio-ws-tell_many"),
        targets=(
            Target(
                "msgs_per_s",
                ">=",
                0.5,
                baseline="raw-trio-websocket-packed",
                runtime="actr_trio-ws",
                source=ISSUE_11,
            ),
            Target(
                "msgs_per_s",
                ">=",
                0.5,
                baseline="raw-trio-websocket-packed",
                runtime="actr_trio-ws-tell_many",
                source=ISSUE_11,
            ),
            Target(
                "msgs_per_s",
                ">=",
                0.7,
                baseline="raw-aiortc-packed",
                runtime="actr_trio",
                source=ISSUE_11,
            ),
            Target(
                "msgs_per_s",
                ">=",
                0.7,
                baseline="raw-aiortc-packed",
                runtime="actr_trio-tell_many",
                source=ISSUE_11,
            ),
            Target("msgs_per_s", ">=", 30_000, runtime="actr_trio", source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W7",
        "16 KiB chunks cross-process",
        headline="MB_per_s",
        higher_is_better=True,
        quick_size=500,
        full_size=2_000,
        size_unit="chunks",
        runtimes=("actr_trio", "actr_trio-ws"),
        targets=(
            Target(
                "MB_per_s", ">=", 0.9, baseline="raw-aiortc", runtime="actr_trio", source=ISSUE_11
            ),
            Target("MB_per_s", ">=", 20, runtime="actr_trio", source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W8",
        "node start",
        headline="process_first_rpc_ms",
        higher_is_better=False,
        quick_size=5,
        full_size=20,
        size_unit="starts",
        runtimes=("actr_trio", "actr_trio-ws"),
        targets=(
            Target(
                "process_first_rpc_ms",
                "<=",
                1.3,
                baseline="raw-aiortc-child",
                runtime="actr_trio",
                source=ISSUE_11,
            ),
            Target(
                "process_first_rpc_ms",
                "<=",
                1.3,
                baseline="raw-trio-websocket-child",
                runtime="actr_trio-ws",
                source=ISSUE_11,
            ),
            Target("inproc_start_ms", "<=", 1, runtime="actr_trio", source=ISSUE_5),
            Target("process_first_rpc_ms", "<=", 300, source=ISSUE_5),
        ),
    )
)
REGISTRY.add_workload(
    Workload(
        "W9",
        "metrics overhead in process",
        headline="on_off_ratio",
        higher_is_better=True,
        quick_size=10_000,
        pin_cpu=True,
        full_size=40_000,
        size_unit="requests",
        targets=(Target("on_off_ratio", ">=", 0.9, source="issue 14"),),
    )
)
