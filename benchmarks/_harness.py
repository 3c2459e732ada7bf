"""Benchmark harness: registry of workloads and subjects, repetition, statistics, reports.

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

Everything here except :func:`run_suite` and :func:`render_chart` is pure and unit-tested.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TextIO

Measurement = dict[str, float]
MeasureFn = Callable[[int], Measurement]
Kind = Literal["runtime", "baseline"]

SCHEMA = "actr_trio.bench/1"
#: --compare fails when a speed ratio fell by more than this fraction.
REGRESSION_THRESHOLD = 0.20
RUNTIME_MODULE = "benchmarks.runtime"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Target:
    """A target from issue 5, checked against a runtime subject's medians.

    ``baseline=None``: the runtime's own figure ``metric`` compared with ``value``.
    ``baseline="x"``: the speed ratio against baseline ``x`` compared with ``value``.
    ``runtime=None`` applies the target to every runtime subject of the workload.
    """

    metric: str
    op: Literal[">=", "<="]
    value: float
    baseline: str | None = None
    runtime: str | None = None

    def describe(self) -> str:
        if self.baseline is None:
            return f"{self.metric} {self.op} {format_value(self.value)}"
        return f"ratio vs {self.baseline} {self.op} {self.value:g}x"

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    headline: str  # figure the ratios are computed on; every subject should report it
    higher_is_better: bool
    quick_size: int
    full_size: int
    size_unit: str = "messages"
    targets: tuple[Target, ...] = ()
    # Run every subject pinned to one CPU (isolated runs only). For in-process workloads:
    # on this 2-vCPU VM a thread handoff across CPUs is bimodal (pykka ask p50 13 or 77 µs
    # from run to run); on one CPU it is stable, and it is pykka's best case.
    pin_cpu: bool = False


@dataclass(frozen=True)
class Subject:
    workload: str
    name: str
    kind: Kind
    measure: MeasureFn
    label: str = ""
    quick_size: int | None = None  # overrides the workload's sizes (figures are rates)
    full_size: int | None = None
    timeout_s: float = 120.0  # per repetition, enforced when isolated
    compare_to: tuple[str, ...] | None = None  # runtime only: baselines to ratio against

    def size(self, workload: Workload, *, quick: bool) -> int:
        if quick:
            return self.quick_size if self.quick_size is not None else workload.quick_size
        return self.full_size if self.full_size is not None else workload.full_size


@dataclass
class Registry:
    workloads: dict[str, Workload] = field(default_factory=dict)
    subjects: list[Subject] = field(default_factory=list)

    def add_workload(self, workload: Workload) -> Workload:
        if workload.id in self.workloads:
            raise ValueError(f"workload {workload.id!r} registered twice")
        self.workloads[workload.id] = workload
        return workload

    def add_subject(self, subject: Subject) -> Subject:
        if subject.workload not in self.workloads:
            raise ValueError(f"subject {subject.name!r}: unknown workload {subject.workload!r}")
        if self.find(subject.workload, subject.name) is not None:
            raise ValueError(f"subject {subject.workload}/{subject.name} registered twice")
        self.subjects.append(subject)
        return subject

    def find(self, workload: str, name: str) -> Subject | None:
        for s in self.subjects:
            if s.workload == workload and s.name == name:
                return s
        return None

    def subjects_for(self, workload: str) -> list[Subject]:
        """Runtime subjects first, then baselines, each in registration order."""
        mine = [s for s in self.subjects if s.workload == workload]
        return [s for s in mine if s.kind == "runtime"] + [s for s in mine if s.kind == "baseline"]

    def subject(
        self,
        workload: str,
        name: str,
        *,
        kind: Kind = "baseline",
        label: str = "",
        quick_size: int | None = None,
        full_size: int | None = None,
        timeout_s: float = 120.0,
        compare_to: Sequence[str] | None = None,
    ) -> Callable[[MeasureFn], MeasureFn]:
        """Decorator registering ``fn(size) -> Measurement`` as a subject of ``workload``."""

        def register(fn: MeasureFn) -> MeasureFn:
            self.add_subject(
                Subject(
                    workload=workload,
                    name=name,
                    kind=kind,
                    measure=fn,
                    label=label or _first_line(fn.__doc__),
                    quick_size=quick_size,
                    full_size=full_size,
                    timeout_s=timeout_s,
                    compare_to=tuple(compare_to) if compare_to is not None else None,
                )
            )
            return fn

        return register

    def runtime(
        self, workload: str, name: str = "actr_trio", **kwargs: Any
    ) -> Callable[[MeasureFn], MeasureFn]:
        """Decorator for runtime subjects (``benchmarks/runtime.py``)."""
        return self.subject(workload, name, kind="runtime", **kwargs)


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


#: The registry used by ``python -m benchmarks.run``.
REGISTRY = Registry()
subject = REGISTRY.subject
runtime = REGISTRY.runtime


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


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    def to_json(self) -> dict[str, float]:
        return {
            "n": self.n,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "q1": self.q1,
            "q3": self.q3,
        }


def summarize(values: Sequence[float]) -> Stats:
    """Median, min/max and quartiles (inclusive method) of repeated figures."""
    if not values:
        raise ValueError("summarize() needs at least one value")
    vals = sorted(float(v) for v in values)
    med = statistics.median(vals)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = med
    return Stats(n=len(vals), median=med, min=vals[0], max=vals[-1], q1=q1, q3=q3)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile() of an empty sequence")
    if not 0 < pct <= 100:
        raise ValueError(f"pct={pct!r} must be in (0, 100]")
    rank = math.ceil(pct / 100 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


def latency_figures(samples_ns: Iterable[int]) -> Measurement:
    """p50/p99/mean in microseconds from round-trip samples in nanoseconds."""
    s = sorted(samples_ns)
    return {
        "p50_us": percentile(s, 50) / 1e3,
        "p99_us": percentile(s, 99) / 1e3,
        "mean_us": statistics.fmean(s) / 1e3,
    }


def speed_ratio(runtime_value: float, baseline_value: float, *, higher_is_better: bool) -> float:
    """> 1 means the runtime is faster, whatever the figure's direction."""
    if runtime_value <= 0 or baseline_value <= 0:
        raise ValueError("speed_ratio() needs positive figures")
    if higher_is_better:
        return runtime_value / baseline_value
    return baseline_value / runtime_value


# --------------------------------------------------------------------------------------------
# Results document (the JSON schema)


def subject_result(
    subject: Subject, size: int, reps: Sequence[Measurement], error: str | None
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if reps:
        keys = sorted({k for r in reps for k in r})
        for k in keys:
            vals = [r[k] for r in reps if k in r]
            metrics[k] = summarize(vals).to_json()
    if error is not None and not reps:
        status = "error"
    elif reps:
        status = "ok"
    else:
        status = "n/a"
    return {
        "name": subject.name,
        "kind": subject.kind,
        "label": subject.label,
        "size": size,
        "status": status,
        "error": error,
        "reps": [dict(r) for r in reps],
        "metrics": metrics,
    }


def compute_ratios(
    workload: Workload, subjects: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Speed ratios runtime vs baseline on the headline figure (``None`` when not measurable).

    ``ratio`` compares medians; ``min``/``max`` is the range of per-repetition ratios
    (repetitions are interleaved, so rep i of the runtime and rep i of the baseline ran
    back to back).
    """
    h = workload.headline
    runtimes = [s for s in subjects if s["kind"] == "runtime"]
    baselines = [s for s in subjects if s["kind"] == "baseline"]
    out: list[dict[str, Any]] = []
    for rt in runtimes:
        wanted = rt.get("compare_to")
        for bl in baselines:
            if wanted is not None and bl["name"] not in wanted:
                continue
            entry: dict[str, Any] = {
                "runtime": rt["name"],
                "baseline": bl["name"],
                "metric": h,
                "ratio": None,
                "min": None,
                "max": None,
            }
            rm, bm = rt["metrics"].get(h), bl["metrics"].get(h)
            if rm is not None and bm is not None and rm["median"] > 0 and bm["median"] > 0:
                entry["ratio"] = speed_ratio(
                    rm["median"], bm["median"], higher_is_better=workload.higher_is_better
                )
                paired = [
                    speed_ratio(a[h], b[h], higher_is_better=workload.higher_is_better)
                    for a, b in zip(rt["reps"], bl["reps"], strict=False)
                    if a.get(h, 0) > 0 and b.get(h, 0) > 0
                ]
                if paired:
                    entry["min"], entry["max"] = min(paired), max(paired)
            out.append(entry)
        known = {bl["name"] for bl in baselines}
        out.extend(  # a misspelt compare_to name stays visible as n/a
            {"runtime": rt["name"], "baseline": name, "metric": h}
            | {"ratio": None, "min": None, "max": None}
            for name in wanted or ()
            if name not in known
        )
    return out


def check_targets(workload: Workload, wres: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the workload's targets against its runtime subjects (``met`` None = n/a)."""
    out: list[dict[str, Any]] = []
    runtimes = [s for s in wres["subjects"] if s["kind"] == "runtime" and s["status"] == "ok"]
    for t in workload.targets:
        matching = [r for r in runtimes if t.runtime is None or r["name"] == t.runtime]
        if not matching:
            out.append(
                {"runtime": t.runtime, "target": t.describe(), "measured": None, "met": None}
            )
            continue
        for r in matching:
            measured: float | None = None
            if t.baseline is None:
                m = r["metrics"].get(t.metric)
                measured = m["median"] if m else None
            else:
                for ratio in wres["ratios"]:
                    if ratio["runtime"] == r["name"] and ratio["baseline"] == t.baseline:
                        measured = ratio["ratio"]
            out.append(
                {
                    "runtime": r["name"],
                    "target": t.describe(),
                    "measured": measured,
                    "met": None if measured is None else t.met(measured),
                }
            )
    return out


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("actr-trio", "trio", "trio-asyncio", "aiortc", "aioice", "pykka", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``doc`` is not a results document of this schema."""

    def need(obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
        if key not in obj:
            raise ValueError(f"{where}: missing {key!r}")
        if not isinstance(obj[key], typ):
            raise ValueError(f"{where}: {key!r} should be {typ}, got {type(obj[key]).__name__}")
        return obj[key]

    if doc.get("schema") != SCHEMA:
        raise ValueError(f"schema should be {SCHEMA!r}, got {doc.get('schema')!r}")
    need(doc, "quick", bool, "document")
    need(doc, "date", str, "document")
    need(doc, "runtime_module", str, "document")
    for w in need(doc, "workloads", list, "document"):
        wid = need(w, "id", str, "workload")
        need(w, "headline", str, wid)
        need(w, "higher_is_better", bool, wid)
        for s in need(w, "subjects", list, wid):
            where = f"{wid}/{s.get('name')}"
            need(s, "name", str, where)
            if need(s, "kind", str, where) not in ("runtime", "baseline"):
                raise ValueError(f"{where}: bad kind {s['kind']!r}")
            if need(s, "status", str, where) not in ("ok", "error", "n/a"):
                raise ValueError(f"{where}: bad status {s['status']!r}")
            need(s, "reps", list, where)
            for k, m in need(s, "metrics", dict, where).items():
                for part in ("n", "median", "min", "max", "q1", "q3"):
                    need(m, part, (int, float), f"{where}.{k}")
        for r in need(w, "ratios", list, wid):
            for key in ("runtime", "baseline", "metric"):
                need(r, key, str, f"{wid} ratio")
            if r.get("ratio") is not None and not isinstance(r["ratio"], (int, float)):
                raise ValueError(f"{wid} ratio: 'ratio' should be a number or null")
        need(w, "targets", list, wid)


# --------------------------------------------------------------------------------------------
# Rendering


def format_value(x: float | None) -> str:
    """Three significant digits with k/M suffixes: 128400 -> '128k', 21.34 -> '21.3'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    ax = abs(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= scale:
            return f"{_sig3(x / scale)}{suffix}"
    return _sig3(x)


def _sig3(x: float) -> str:
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def format_stat(m: Mapping[str, float]) -> str:
    """'median (min..max)' for one figure."""
    if m["n"] <= 1:
        return format_value(m["median"])
    return f"{format_value(m['median'])} ({format_value(m['min'])}..{format_value(m['max'])})"


def format_ratio(r: Mapping[str, Any]) -> str:
    if r.get("ratio") is None:
        return "n/a"
    text = f"{r['ratio']:.2f}x"
    if r.get("min") is not None and r.get("max") is not None:
        text += f" ({r['min']:.2f}..{r['max']:.2f})"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The stdout report: figures per subject, then ratios, then targets."""
    lines: list[str] = []
    mode = "quick" if doc["quick"] else "full"
    lines.append(
        f"## actr_trio benchmarks — {doc['date']} ({mode}, {doc.get('reps_per_subject', '?')} reps, "
        f"medians with min..max)"
    )
    pinned = [w["id"] for w in doc["workloads"] if w.get("pinned_cpu") is not None]
    if pinned:
        lines.append("")
        lines.append(
            f"{', '.join(pinned)}: every subject pinned to one CPU (benchmarks/README.md)."
        )
    if str(doc.get("runtime_module", "")).startswith("error"):
        lines.append("")
        lines.append(
            f"benchmarks/runtime.py failed to import: {_short(doc['runtime_module'], 200)}"
        )
    lines.append("")
    lines.append("| workload | subject | kind | size | headline | other figures |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for w in doc["workloads"]:
        for s in w["subjects"]:
            head = s["metrics"].get(w["headline"])
            if s["status"] == "ok" and head is not None:
                headline = f"{w['headline']} {format_stat(head)}"
            elif s["status"] == "ok":
                headline = f"{w['headline']} n/a (not reported)"
            elif s["status"] == "error":
                headline = "n/a (error: " + _short(s.get("error") or "") + ")"
            else:
                headline = "n/a"
            others = "; ".join(
                f"{k} {format_stat(m)}" for k, m in s["metrics"].items() if k != w["headline"]
            )
            lines.append(
                f"| {w['id']} {_cell(w['title'])} | {_cell(s['name'])} | {s['kind']} | "
                f"{s['size'] if s['status'] != 'n/a' else '—'} | {_cell(headline)} | {_cell(others)} |"
            )
    lines.append("")
    lines.append("Speed ratio runtime vs baseline (> 1 = runtime faster; latencies inverted):")
    lines.append("")
    lines.append("| workload | runtime | baseline | figure | ratio (per-rep range) |")
    lines.append("| --- | --- | --- | --- | --- |")
    for w in doc["workloads"]:
        if not w["ratios"]:
            lines.append(
                f"| {w['id']} | — | — | {w['headline']} | n/a (no runtime/baseline pair) |"
            )
        lines.extend(
            f"| {w['id']} | {r['runtime']} | {r['baseline']} | {r['metric']} | {format_ratio(r)} |"
            for r in w["ratios"]
        )
    targets = [(w["id"], t) for w in doc["workloads"] for t in w["targets"]]
    if targets:
        lines.append("")
        lines.append("| workload | runtime | target | measured | met |")
        lines.append("| --- | --- | --- | --- | --- |")
        for wid, t in targets:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            measured = format_value(t["measured"]) if t["measured"] is not None else "n/a"
            lines.append(f"| {wid} | {t['runtime'] or '—'} | {t['target']} | {measured} | {met} |")
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_chart(doc: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars of speed ratios per workload (log scale), Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    labels: list[str] = []
    values: list[float | None] = []
    for w in doc["workloads"]:
        if not w["ratios"]:
            labels.append(f"{w['id']}: no runtime/baseline pair")
            values.append(None)
        for r in w["ratios"]:
            labels.append(f"{w['id']} {r['runtime']} vs {r['baseline']}")
            values.append(r["ratio"])
    height = max(2.5, 0.35 * len(labels) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    ys = list(range(len(labels)))[::-1]
    finite = [v for v in values if v is not None]
    for y, v in zip(ys, values, strict=True):
        if v is None:
            ax.text(1.0, y, "  n/a", va="center", ha="left", color="grey", fontsize=8)
        else:
            # bars grow from 1.0 (parity) towards the ratio, so slower and faster read alike
            ax.barh(y, abs(v - 1.0), left=min(v, 1.0), color="tab:green" if v >= 1 else "tab:red")
            ax.text(v, y, f" {v:.2f}x ", va="center", ha="left" if v >= 1 else "right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min([*finite, 0.5]) / 2, max([*finite, 2.0]) * 2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    mode = "quick" if doc["quick"] else "full"
    ax.set_xlabel("speed ratio runtime / baseline (> 1 = runtime faster, log scale)")
    ax.set_title(f"actr_trio vs baselines, {doc['date']} ({mode})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Regression check


@dataclass(frozen=True)
class Comparison:
    lines: list[str]
    regressions: list[str]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


def _ratio_index(doc: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for w in doc["workloads"]:
        for r in w["ratios"]:
            out[f"{w['id']} {r['runtime']} vs {r['baseline']} ({r['metric']})"] = r["ratio"]
    return out


def compare_documents(
    old: Mapping[str, Any], new: Mapping[str, Any], threshold: float = REGRESSION_THRESHOLD
) -> Comparison:
    """Each ratio's change from ``old`` to ``new``; a fall by more than ``threshold`` regresses.

    A ratio measured before that is n/a now (the subject failed) counts as a regression too;
    ratios of workloads absent from either document (``--only``) are ignored.
    """
    o, n = _ratio_index(old), _ratio_index(new)
    lines = [
        f"Ratio changes vs {old.get('date', '?')} ({'quick' if old.get('quick') else 'full'}); "
        f"fail when a ratio fell > {threshold:.0%}:",
        "",
        "| ratio | before | now | change | |",
        "| --- | --- | --- | --- | --- |",
    ]
    if old.get("quick") != new.get("quick"):
        lines.insert(1, "(note: comparing a quick run with a full run; sizes differ)")
    regressions: list[str] = []
    for key in sorted(set(o) & set(n)):
        before, now = o[key], n[key]
        if before is not None and before > 0 and now is None:
            lines.append(f"| {key} | {before:.2f}x | n/a | lost | **REGRESSION** |")
            regressions.append(key)
            continue
        if before is None or now is None or before <= 0:
            lines.append(f"| {key} | {_fmt_ratio(before)} | {_fmt_ratio(now)} | n/a | |")
            continue
        change = now / before - 1
        flag = ""
        if now < before * (1 - threshold):
            flag = "**REGRESSION**"
            regressions.append(key)
        lines.append(f"| {key} | {before:.2f}x | {now:.2f}x | {change:+.1%} | {flag} |")
    return Comparison(lines=lines, regressions=regressions)


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


# --------------------------------------------------------------------------------------------
# Running


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

    run_one = runner or default_runner
    selected = [w for wid, w in sorted(registry.workloads.items()) if not only or wid in only]
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    workloads_out: list[dict[str, Any]] = []
    total = sum(len(registry.subjects_for(w.id)) for w in selected) * n_reps
    done = 0
    for w in selected:
        subjects = registry.subjects_for(w.id)
        results: dict[str, list[Measurement]] = {s.name: [] for s in subjects}
        errors: dict[str, str | None] = {s.name: None for s in subjects}
        for rep in range(n_reps):
            for s in subjects:
                done += 1
                if errors[s.name] is not None:
                    continue  # failed once: do not spend the budget on it again
                size = s.size(w, quick=quick)
                progress.update(
                    f"{done}/{total} {w.id} {s.name} rep {rep + 1}/{n_reps} (size {size})"
                )
                try:
                    results[s.name].append(run_one(s, size))
                except SubjectError as exc:
                    errors[s.name] = str(exc)
                except Exception as exc:
                    errors[s.name] = f"{type(exc).__name__}: {exc}"
                    progress.update(f"{w.id} {s.name} failed: {_short(errors[s.name] or '')}")
        subj_out = []
        for s in subjects:
            res = subject_result(s, s.size(w, quick=quick), results[s.name], errors[s.name])
            res["compare_to"] = list(s.compare_to) if s.compare_to is not None else None
            subj_out.append(res)
        if not any(s.kind == "runtime" for s in subjects):
            subj_out.insert(
                0,
                {
                    "name": "actr_trio",
                    "kind": "runtime",
                    "label": "not registered (benchmarks/runtime.py)",
                    "size": 0,
                    "status": "n/a",
                    "error": None,
                    "reps": [],
                    "metrics": {},
                    "compare_to": None,
                },
            )
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
