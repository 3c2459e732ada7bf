"""Statistics of repeated figures: medians, quartiles, percentiles, speed ratios (pure)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

#: What a subject returns: a flat mapping of figures, e.g. ``{"msgs_per_s": 1.2e5}``.
Measurement = dict[str, float]
MeasureFn = Callable[[int], Measurement]


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
