"""``--compare``: each speed ratio's change between two results documents (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: --compare fails when a speed ratio fell by more than this fraction.
REGRESSION_THRESHOLD = 0.20


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
