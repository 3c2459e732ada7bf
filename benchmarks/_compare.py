"""``--compare``: each speed ratio's change between two results documents (pure).

Only the runtime/baseline speed ratios are compared: absolute figures move with the load of
this shared machine, and the baselines of the same run move with them. Targets are not
compared either (they are reported, never gated).

How far a ratio may fall before it counts as a regression comes from the two documents
themselves. Each ratio carries the range of its per-repetition ratios (rep *i* of the runtime
over rep *i* of the baseline, run back to back); its *spread* is half that range relative to
the median ratio. A fall counts when it exceeds the old spread plus the new one, i.e. when the
two runs' central ranges no longer touch, and never below ``MIN_THRESHOLD``: a row whose
repetitions agree closely still needs a real change. A noisy row gets a wide threshold (shown
beside it) rather than a false alarm; a fixed 20 % would be exceeded by noise alone on some
rows here (W6, W7) and hide real falls on steady ones.

A quick run and a full run differ in sizes and repetitions: they are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchmarks._stats import format_value

#: The smallest fall that counts, however steady the repetitions of both runs were.
MIN_THRESHOLD = 0.05
#: With fewer repetitions a run says nothing about its own noise.
MIN_REPS = 2


class IncomparableRuns(ValueError):
    """The two documents cannot be compared (quick vs full, too few repetitions)."""


@dataclass(frozen=True)
class Comparison:
    lines: list[str]
    regressions: list[str]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


@dataclass(frozen=True)
class _Ratio:
    value: float | None
    low: float | None
    high: float | None

    @property
    def spread(self) -> float | None:
        """Half the per-repetition range, relative to the median ratio."""
        if self.value is None or self.value <= 0 or self.low is None or self.high is None:
            return None
        return (self.high - self.low) / (2 * self.value)

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{format_value(self.value)}x"
        return f"{format_value(self.value)}x ({format_value(self.low)}..{format_value(self.high)})"


def _ratio_index(doc: Mapping[str, Any]) -> dict[str, _Ratio]:
    out: dict[str, _Ratio] = {}
    for w in doc["workloads"]:
        for r in w["ratios"]:
            key = f"{w['id']} {r['runtime']} vs {r['baseline']} ({r['metric']})"
            out[key] = _Ratio(r["ratio"], r.get("min"), r.get("max"))
    return out


def check_comparable(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Raise :class:`IncomparableRuns` when ``old`` and ``new`` cannot be compared."""
    if bool(old.get("quick")) != bool(new.get("quick")):
        raise IncomparableRuns(
            f"refusing to compare a {_mode(old)} run ({old.get('date', '?')}) with a "
            f"{_mode(new)} run: sizes and repetitions differ; compare like with like"
        )
    for doc in (old, new):
        reps = doc.get("reps_per_subject")
        if isinstance(reps, int) and reps < MIN_REPS:
            raise IncomparableRuns(
                f"the {doc.get('date', '?')} run has {reps} repetition(s) per subject: its "
                f"noise is unknown, at least {MIN_REPS} are needed to compare"
            )


def threshold(before: _Ratio, now: _Ratio, floor: float = MIN_THRESHOLD) -> float | None:
    """The fall that counts for this ratio: both spreads added, at least ``floor``."""
    if before.spread is None or now.spread is None:
        return None
    return max(floor, before.spread + now.spread)


def compare_documents(
    old: Mapping[str, Any], new: Mapping[str, Any], min_threshold: float = MIN_THRESHOLD
) -> Comparison:
    """Each ratio's change from ``old`` to ``new``; a fall beyond its threshold regresses.

    A ratio measured before that is n/a now (the subject failed) counts as a regression too;
    ratios of workloads absent from either document (``--only``) are ignored. Raises
    :class:`IncomparableRuns` for a quick run against a full one.
    """
    check_comparable(old, new)
    o, n = _ratio_index(old), _ratio_index(new)
    lines = [
        f"Ratio changes vs {old.get('date', '?')} ({_mode(old)}); a fall regresses beyond the "
        f"two runs' spreads added (half the per-rep range of each; at least {min_threshold:.0%}):",
        "",
        "| ratio | before (per-rep range) | now (per-rep range) | change | threshold | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    regressions: list[str] = []
    for key in sorted(set(o) & set(n)):
        line, regressed = _compare_one(key, o[key], n[key], min_threshold)
        lines.append(line)
        if regressed:
            regressions.append(key)
    return Comparison(lines=lines, regressions=regressions)


def _compare_one(key: str, before: _Ratio, now: _Ratio, floor: float) -> tuple[str, bool]:
    """The table row of one ratio and whether it regressed."""
    cells = [key, before.text(), now.text()]
    if before.value is not None and before.value > 0 and now.value is None:
        return _row(*cells, "lost", "—", "**REGRESSION**"), True
    if before.value is None or now.value is None or before.value <= 0:
        return _row(*cells, "n/a", "—", ""), False
    change = now.value / before.value - 1
    limit = threshold(before, now, floor)
    if limit is None:
        # Only an old document without per-rep ranges gets here: say so, do not guess.
        return _row(*cells, f"{change:+.1%}", "unknown (no per-rep range)", "not gated"), False
    note = " (too noisy to tell a fall)" if limit >= 1 else ""
    regressed = change < -limit
    flag = "**REGRESSION**" if regressed else ""
    return _row(*cells, f"{change:+.1%}", f"{limit:.0%}{note}", flag), regressed


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _mode(doc: Mapping[str, Any]) -> str:
    return "quick" if doc.get("quick") else "full"
