"""Benchmark harness: runs the registered subjects and builds the results document.

A *workload* (W1..W8) is one question ("how many one-way tells per second in process?").
A *subject* answers it: the actr_trio runtime (registered by ``benchmarks/runtime.py``) or a
baseline (``benchmarks/baselines/``). A subject is a plain function ``measure(size) -> figures``
that runs its own ``trio.run`` / ``asyncio.run`` / subprocesses and returns a flat mapping of
figures, e.g. ``{"msgs_per_s": 1.2e5}`` or ``{"p50_us": 21.0, "p99_us": 40.0}``.

All subjects of a workload are measured in the same run, repetitions interleaved (rep 1 of
every subject, then rep 2, ...), so slow drifts of a noisy machine hit them alike. By default
each repetition runs in a fresh interpreter (``python -m benchmarks._worker``) so that subjects
cannot disturb each other (threads, GC heap, event-loop state) and a hung subject is killed
after its timeout. The headline of a workload is the *speed ratio* of the runtime to each
baseline on the workload's headline figure, oriented so that > 1 always means "the runtime is
faster": ``runtime / baseline`` for throughputs and ``baseline / runtime`` for latencies.

The pieces: ``_stats`` (statistics), ``_registry`` (workloads, subjects, targets),
``_document`` (the results JSON), ``_render`` (table, chart), ``_compare`` (``--compare``);
this module runs them and re-exports what subjects and tests use. Everything except
:func:`run_suite`, :func:`run_isolated` and :func:`render_chart` is pure and unit-tested.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from benchmarks._compare import (
    MIN_THRESHOLD,
    Comparison,
    IncomparableRuns,
    compare_documents,
)
from benchmarks._document import (
    SCHEMA,
    check_targets,
    compute_ratios,
    environment,
    missing_result,
    problems,
    subject_result,
    validate_document,
)
from benchmarks._registry import (
    REGISTRY,
    Kind,
    Registry,
    Subject,
    Target,
    Workload,
    runtime,
    subject,
)
from benchmarks._render import format_ratio, format_stat, render_chart, render_markdown, short
from benchmarks._stats import (
    MeasureFn,
    Measurement,
    Stats,
    format_value,
    latency_figures,
    percentile,
    speed_ratio,
    summarize,
)

__all__ = [
    "MIN_THRESHOLD",
    "REGISTRY",
    "REPO_ROOT",
    "RUNTIME_MODULE",
    "SCHEMA",
    "Comparison",
    "IncomparableRuns",
    "Kind",
    "MeasureFn",
    "Measurement",
    "Progress",
    "Registry",
    "Stats",
    "Subject",
    "SubjectError",
    "Target",
    "Workload",
    "check_targets",
    "compare_documents",
    "compute_ratios",
    "environment",
    "format_ratio",
    "format_stat",
    "format_value",
    "latency_figures",
    "load_registry",
    "percentile",
    "pinned_cpu",
    "problems",
    "render_chart",
    "render_markdown",
    "run_in_process",
    "run_isolated",
    "run_suite",
    "runtime",
    "speed_ratio",
    "subject",
    "subject_result",
    "summarize",
    "validate_document",
]

RUNTIME_MODULE = "benchmarks.runtime"
REPO_ROOT = Path(__file__).resolve().parent.parent


def load_registry() -> tuple[Registry, str]:
    """Import the workloads, the baselines and (if present) ``benchmarks/runtime.py``.

    Returns the registry and the runtime module's status: ``"loaded"``, ``"absent"`` or
    ``"error: ..."``; a broken runtime module is reported, never fatal.
    """
    importlib.import_module("benchmarks.workloads")
    baselines = importlib.import_module("benchmarks.baselines")
    for name in baselines.MODULES:
        importlib.import_module(f"benchmarks.baselines.{name}")
    try:
        importlib.import_module(RUNTIME_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != RUNTIME_MODULE:
            return REGISTRY, f"error: {exc!r}"
        return REGISTRY, "absent"
    except Exception as exc:
        return REGISTRY, f"error: {exc!r}"
    return REGISTRY, "loaded"


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._width = 0

    def update(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f}s] {text}"
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


class SubjectError(Exception):
    """A subject failed in its worker; the message is the worker's ``Type: message``."""


def pinned_cpu() -> int | None:
    """The CPU pinned runs use (the highest one this process may run on), if pinning works."""
    try:
        return max(os.sched_getaffinity(0))
    except (AttributeError, OSError, ValueError):
        return None


def run_isolated(subject: Subject, size: int, *, pin_cpu: bool = False) -> Measurement:
    """One repetition in a fresh interpreter, killed (whole process group) after its timeout."""
    with tempfile.TemporaryDirectory(prefix="actr-bench-") as tmp:
        result = Path(tmp) / "result.json"
        log = Path(tmp) / "worker.log"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._worker",
            subject.workload,
            subject.name,
            str(size),
            str(result),
        ]
        cpu = pinned_cpu() if pin_cpu else None
        if cpu is not None:
            cmd.append(f"--pin-cpu={cpu}")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with log.open("wb") as log_f:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_f,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: a timeout kills its children too
            )
            try:
                rc = proc.wait(timeout=subject.timeout_s)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"timed out after {subject.timeout_s:g}s") from None
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        if result.exists():
            payload = json.loads(result.read_text())
            if payload.get("ok"):
                return {k: float(v) for k, v in payload["figures"].items()}
            raise SubjectError(payload.get("error", "worker failed"))
        tail = log.read_text(errors="replace")[-800:]
        raise SubjectError(f"worker exited with {rc} and no result: {tail}")


def run_in_process(subject: Subject, size: int) -> Measurement:
    return {k: float(v) for k, v in subject.measure(size).items()}


def run_suite(
    registry: Registry,
    *,
    quick: bool,
    only: Sequence[str] | None = None,
    reps: int | None = None,
    isolate: bool = True,
    runtime_module: str = "absent",
    progress: Progress | None = None,
    runner: Callable[[Subject, int], Measurement] | None = None,
) -> dict[str, Any]:
    """Measure every subject of the selected workloads and build the results document."""
    progress = progress or Progress()
    n_reps = reps if reps is not None else (3 if quick else 5)

    def default_runner(s: Subject, size: int) -> Measurement:
        if not isolate:
            return run_in_process(s, size)
        return run_isolated(s, size, pin_cpu=registry.workloads[s.workload].pin_cpu)

    selected = [w for wid, w in sorted(registry.workloads.items()) if not only or wid in only]
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    counter = _Counter(sum(len(registry.subjects_for(w.id)) for w in selected) * n_reps)
    workloads_out = []
    for w in selected:
        subj_out = _measure_workload(
            w,
            registry.subjects_for(w.id),
            runner or default_runner,
            quick,
            n_reps,
            progress,
            counter,
        )
        registered = {s["name"] for s in subj_out}
        missing = [
            missing_result(name, _missing_reason(runtime_module))
            for name in w.runtimes
            if name not in registered
        ]
        n_runtimes = sum(s["kind"] == "runtime" for s in subj_out)
        subj_out[n_runtimes:n_runtimes] = missing
        wres: dict[str, Any] = {
            "id": w.id,
            "title": w.title,
            "headline": w.headline,
            "higher_is_better": w.higher_is_better,
            "size_unit": w.size_unit,
            "pinned_cpu": pinned_cpu() if (w.pin_cpu and isolate) else None,
            "subjects": subj_out,
        }
        wres["ratios"] = compute_ratios(w, subj_out)
        wres["targets"] = check_targets(w, wres)
        workloads_out.append(wres)
    progress.done()
    return {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d"),
        "started_at": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "quick": quick,
        "reps_per_subject": n_reps,
        "isolated": isolate,
        "runtime_module": runtime_module,
        "environment": environment(),
        "workloads": workloads_out,
    }


class _Counter:
    """Repetitions done so far, for the progress line."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0


def _measure_workload(
    w: Workload,
    subjects: Sequence[Subject],
    run_one: Callable[[Subject, int], Measurement],
    quick: bool,
    n_reps: int,
    progress: Progress,
    counter: _Counter,
) -> list[dict[str, Any]]:
    """Every subject's rows, repetitions interleaved; a subject that fails is not retried."""
    results: dict[str, list[Measurement]] = {s.name: [] for s in subjects}
    errors: dict[str, str | None] = {s.name: None for s in subjects}
    for rep in range(n_reps):
        for s in subjects:
            counter.done += 1
            if errors[s.name] is not None:
                continue  # failed once: do not spend the budget on it again
            size = s.size(w, quick=quick)
            progress.update(
                f"{counter.done}/{counter.total} {w.id} {s.name} rep {rep + 1}/{n_reps} "
                f"(size {size})"
            )
            try:
                results[s.name].append(_one_rep(run_one, s, w, size))
            except SubjectError as exc:
                errors[s.name] = str(exc)
            except Exception as exc:
                errors[s.name] = f"{type(exc).__name__}: {exc}"
            if errors[s.name] is not None:
                done = len(results[s.name])
                if done:
                    errors[s.name] = f"rep {done + 1} of {n_reps}: {errors[s.name]}"
                progress.update(f"{w.id} {s.name} FAILED: {short(errors[s.name] or '')}")
    return [
        subject_result(s, s.size(w, quick=quick), results[s.name], errors[s.name]) for s in subjects
    ]


def _one_rep(
    run_one: Callable[[Subject, int], Measurement], s: Subject, w: Workload, size: int
) -> Measurement:
    figures = run_one(s, size)
    if w.headline not in figures:
        # Without its headline a subject has no ratio: that is a failure, not a blank cell.
        got = ", ".join(sorted(figures)) or "none"
        raise SubjectError(f"reported no {w.headline} (figures: {got})")
    return figures


def _missing_reason(runtime_module: str) -> str:
    if runtime_module.startswith("error"):
        detail = runtime_module.removeprefix("error:").strip()
        return f"not registered: benchmarks/runtime.py failed to import ({detail})"
    if runtime_module == "absent":
        return "not registered: benchmarks/runtime.py is absent"
    return "not registered by benchmarks/runtime.py"
