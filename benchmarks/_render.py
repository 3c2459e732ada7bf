"""The Markdown report and the PNG chart of a results document."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks._document import problems
from benchmarks._stats import format_value


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
    """The stdout report: figures per subject, ratios, targets, then what failed."""
    mode = "quick" if doc["quick"] else "full"
    lines = [
        f"## actr_trio benchmarks — {doc['date']} ({mode}, {doc.get('reps_per_subject', '?')} "
        "reps, medians with min..max)"
    ]
    pinned = [w["id"] for w in doc["workloads"] if w.get("pinned_cpu") is not None]
    if pinned:
        lines += [
            "",
            f"{', '.join(pinned)}: every subject pinned to one CPU (benchmarks/README.md).",
        ]
    if str(doc.get("runtime_module", "")).startswith("error"):
        lines += [
            "",
            f"benchmarks/runtime.py failed to import: {short(doc['runtime_module'], 200)}",
        ]
    lines += ["", *_subjects_table(doc), "", *_ratios_table(doc)]
    targets = _targets_table(doc)
    if targets:
        lines += ["", *targets]
    failed = problems(doc)
    if failed:
        lines += [
            "",
            f"**{len(failed)} problem(s)**: this run did not measure everything it should.",
        ]
        lines += ["", *(f"* {_cell(short(p, 300))}" for p in failed)]
    return "\n".join(lines) + "\n"


def _subjects_table(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        "| workload | subject | kind | size | headline | other figures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w in doc["workloads"]:
        for s in w["subjects"]:
            head = s["metrics"].get(w["headline"])
            if s["status"] == "ok" and head is not None:
                headline = f"{w['headline']} {format_stat(head)}"
            elif s["status"] == "error":
                headline = "**FAILED**: " + short(s.get("error") or "")
            else:
                headline = "n/a"
            others = "; ".join(
                f"{k} {format_stat(m)}" for k, m in s["metrics"].items() if k != w["headline"]
            )
            size = s["size"] if s["status"] != "n/a" and s["size"] else "—"
            lines.append(
                f"| {w['id']} {_cell(w['title'])} | {_cell(s['name'])} | {s['kind']} | "
                f"{size} | {_cell(headline)} | {_cell(others)} |"
            )
    return lines


def _ratios_table(doc: Mapping[str, Any]) -> list[str]:
    lines = [
        "Speed ratio runtime vs baseline (> 1 = runtime faster; latencies inverted):",
        "",
        "| workload | runtime | baseline | figure | ratio (per-rep range) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in doc["workloads"]:
        if not w["ratios"]:
            lines.append(
                f"| {w['id']} | — | — | {w['headline']} | n/a (no runtime/baseline pair) |"
            )
        lines.extend(
            f"| {w['id']} | {r['runtime']} | {r['baseline']} | {r['metric']} | {format_ratio(r)} |"
            for r in w["ratios"]
        )
    return lines


def _targets_table(doc: Mapping[str, Any]) -> list[str]:
    """Each runtime row beside its target, met or not. A target against a baseline is the
    runtime's figure over the baseline's (``p50_us <= 1.3x raw-trio-event``), not oriented."""
    rows = [(w["id"], t) for w in doc["workloads"] for t in w["targets"]]
    if not rows:
        return []
    lines = [
        "| workload | runtime | target | measured | met | set by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for wid, t in rows:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        if t["measured"] is None:
            measured = "n/a"
        elif t.get("baseline"):
            measured = f"{t['measured']:.2f}x"
        else:
            measured = format_value(t["measured"])
        lines.append(
            f"| {wid} | {t['runtime'] or '—'} | {t['target']} | {measured} | {met} | "
            f"{t.get('source') or '—'} |"
        )
    return lines


def short(text: str, limit: int = 80) -> str:
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
