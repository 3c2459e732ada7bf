"""The results document (schema ``actr_trio.bench/1``): subjects, ratios, targets (pure)."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from benchmarks._registry import Subject, Target, Workload
from benchmarks._stats import Measurement, speed_ratio, summarize

SCHEMA = "actr_trio.bench/1"


def subject_result(
    subject: Subject, size: int, reps: Sequence[Measurement], error: str | None
) -> dict[str, Any]:
    """One subject's row. A subject that failed in any repetition is an error row: the reps
    it completed are kept for the record, but it gets no ratio (a partial median would pass
    for a full one)."""
    metrics: dict[str, Any] = {}
    if reps:
        keys = sorted({k for r in reps for k in r})
        for k in keys:
            vals = [r[k] for r in reps if k in r]
            metrics[k] = summarize(vals).to_json()
    if error is not None:
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
        "compare_to": list(subject.compare_to) if subject.compare_to is not None else None,
    }


def missing_result(name: str, reason: str) -> dict[str, Any]:
    """The error row of a runtime subject the workload expects but nobody registered."""
    return {
        "name": name,
        "kind": "runtime",
        "label": "not registered",
        "size": 0,
        "status": "error",
        "error": reason,
        "reps": [],
        "metrics": {},
        "compare_to": None,
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
            both_ok = rt["status"] == "ok" and bl["status"] == "ok"
            if (
                both_ok
                and rm is not None
                and bm is not None
                and rm["median"] > 0
                and bm["median"] > 0
            ):
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
    """Evaluate the workload's targets against its runtime subjects (``met`` None = n/a).

    A target names its runtime subject, or applies to every runtime subject of the workload;
    a subject that failed still gets its target rows, measured n/a.
    """
    out: list[dict[str, Any]] = []
    runtimes = [s for s in wres["subjects"] if s["kind"] == "runtime"]
    by_name = {s["name"]: s for s in wres["subjects"]}
    for t in workload.targets:
        matching = [r for r in runtimes if t.runtime is None or r["name"] == t.runtime]
        if not matching:
            matching = [{"name": t.runtime, "status": "error", "metrics": {}}]
        for r in matching:
            measured = _measure_target(t, r, by_name.get(t.baseline) if t.baseline else None)
            out.append(
                {
                    "runtime": r["name"],
                    "target": t.describe(),
                    "baseline": t.baseline,
                    "source": t.source,
                    "measured": measured,
                    "met": None if measured is None else t.met(measured),
                }
            )
    return out


def _measure_target(t: Target, rt: Mapping[str, Any], bl: Mapping[str, Any] | None) -> float | None:
    """The runtime's median of ``t.metric``, or its quotient by the baseline's median."""
    if rt["status"] != "ok" or (t.metric not in rt["metrics"]):
        return None
    value = float(rt["metrics"][t.metric]["median"])
    if t.baseline is None:
        return value
    if bl is None or bl["status"] != "ok" or t.metric not in bl["metrics"]:
        return None
    base = float(bl["metrics"][t.metric]["median"])
    return value / base if base > 0 else None


def problems(doc: Mapping[str, Any]) -> list[str]:
    """Everything that keeps this run from answering its questions, one line each.

    A subject that failed or was never registered, a ratio that could not be computed
    between two subjects that ran, a target that could not be evaluated. ``python -m
    benchmarks.run`` exits non-zero when there is any: nothing is skipped silently.
    """
    out: list[str] = []
    for w in doc["workloads"]:
        status = {s["name"]: s["status"] for s in w["subjects"]}
        out.extend(
            f"{w['id']} {s['name']} ({s['kind']}): {s.get('error') or 'not measured'}"
            for s in w["subjects"]
            if s["status"] != "ok"
        )
        out.extend(
            f"{w['id']} {r['runtime']} vs {r['baseline']}: ratio n/a"
            + ("" if r["baseline"] in status else f" (no baseline named {r['baseline']!r})")
            for r in w["ratios"]
            if r["ratio"] is None
            and status.get(r["runtime"]) == "ok"
            and status.get(r["baseline"], "ok") == "ok"
        )
        out.extend(
            f"{w['id']} {t['runtime']}: target {t['target']} not measurable"
            for t in w["targets"]
            if t["met"] is None and status.get(t["runtime"]) == "ok"
        )
    return out


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("actr-trio", "trio", "trio-websocket", "aiortc", "aioice", "pykka", "matplotlib"):
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
