"""The benchmark harness (benchmarks/_harness.py, benchmarks/run.py): statistics, registry,
the results schema, rendering and the --compare regression check. Nothing here measures time:
subjects are replaced by a fake runner returning fixed figures."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

# benchmarks/ is a top-level package of the repository, not of the installed library.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import _harness as h  # noqa: E402
from benchmarks import run as bench_run  # noqa: E402


def _registry() -> h.Registry:
    reg = h.Registry()
    reg.add_workload(
        h.Workload(
            "W1",
            "tells",
            headline="msgs_per_s",
            higher_is_better=True,
            quick_size=10,
            full_size=100,
            targets=(
                h.Target("msgs_per_s", ">=", 250.0),
                h.Target("msgs_per_s", ">=", 1.2, baseline="fast"),
            ),
        )
    )
    reg.add_workload(
        h.Workload(
            "W2", "rpc", headline="p50_us", higher_is_better=False, quick_size=5, full_size=50
        )
    )
    reg.add_workload(
        h.Workload(
            "W8", "start", headline="start_ms", higher_is_better=False, quick_size=1, full_size=2
        )
    )

    def never_called(size: int) -> h.Measurement:
        raise AssertionError("the fake runner measures")

    reg.subject("W1", "fast", quick_size=7)(never_called)
    reg.subject("W1", "slow")(never_called)
    reg.runtime("W1")(never_called)
    reg.subject("W2", "base")(never_called)
    reg.runtime("W2")(never_called)
    reg.subject("W2", "broken")(never_called)
    return reg


FIGURES: dict[tuple[str, str], list[h.Measurement]] = {
    ("W1", "actr_trio"): [{"msgs_per_s": 300.0}, {"msgs_per_s": 330.0}, {"msgs_per_s": 270.0}],
    ("W1", "fast"): [{"msgs_per_s": 200.0}, {"msgs_per_s": 220.0}, {"msgs_per_s": 180.0}],
    ("W1", "slow"): [{"msgs_per_s": 100.0}, {"msgs_per_s": 100.0}, {"msgs_per_s": 100.0}],
    ("W2", "actr_trio"): [{"p50_us": 20.0, "p99_us": 40.0}] * 3,
    ("W2", "base"): [{"p50_us": 10.0, "p99_us": 30.0}] * 3,
    ("W8", "actr_trio"): [{"start_ms": 0.5}] * 3,  # registered by some tests only
}


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.reps: dict[tuple[str, str], int] = {}

    def __call__(self, subject: h.Subject, size: int) -> h.Measurement:
        key = (subject.workload, subject.name)
        self.calls.append((*key, size))
        if subject.name == "broken":
            raise RuntimeError("boom")
        i = self.reps.get(key, 0)
        self.reps[key] = i + 1
        return FIGURES[key][i]


def _run(reg: h.Registry | None = None, runner: FakeRunner | None = None) -> dict[str, Any]:
    return h.run_suite(
        reg or _registry(),
        quick=True,
        reps=3,
        progress=h.Progress(io.StringIO()),
        runner=runner or FakeRunner(),
    )


def _workload(doc: dict[str, Any], wid: str) -> dict[str, Any]:
    return next(w for w in doc["workloads"] if w["id"] == wid)


# -- statistics --------------------------------------------------------------------------------


def test_summarize_median_range_quartiles() -> None:
    s = h.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 5.0)
    assert (s.q1, s.q3) == (2.0, 4.0)
    assert h.summarize([2.0, 4.0]).median == 3.0
    one = h.summarize([7.0])
    assert (one.median, one.min, one.max, one.q1, one.q3) == (7.0, 7.0, 7.0, 7.0, 7.0)
    with pytest.raises(ValueError, match="at least one"):
        h.summarize([])


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert h.percentile(values, 50) == 50.0
    assert h.percentile(values, 99) == 99.0
    assert h.percentile(values, 100) == 100.0
    assert h.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="empty"):
        h.percentile([], 50)
    with pytest.raises(ValueError, match="pct"):
        h.percentile(values, 0)


def test_latency_figures_are_microseconds() -> None:
    figs = h.latency_figures([2_000] * 98 + [9_000, 10_000])
    assert figs["p50_us"] == 2.0
    assert figs["p99_us"] == 9.0
    assert figs["mean_us"] == pytest.approx(2.15)


def test_speed_ratio_is_oriented_so_that_more_is_faster() -> None:
    assert h.speed_ratio(300.0, 100.0, higher_is_better=True) == 3.0
    assert h.speed_ratio(20.0, 10.0, higher_is_better=False) == 0.5
    with pytest.raises(ValueError, match="positive"):
        h.speed_ratio(0.0, 1.0, higher_is_better=True)


def test_format_value() -> None:
    assert h.format_value(128_400.0) == "128k"
    assert h.format_value(2_345_678.0) == "2.35M"
    assert h.format_value(21.34) == "21.3"
    assert h.format_value(0.3934) == "0.393"
    assert h.format_value(None) == "n/a"


# -- registry ----------------------------------------------------------------------------------


def test_registry_rejects_duplicates_and_unknown_workloads() -> None:
    reg = _registry()
    with pytest.raises(ValueError, match="twice"):
        reg.add_workload(reg.workloads["W1"])
    with pytest.raises(ValueError, match="twice"):
        reg.subject("W1", "fast")(lambda size: {})
    with pytest.raises(ValueError, match="unknown workload"):
        reg.subject("W9", "x")(lambda size: {})


def test_subjects_runtime_first_sizes_and_labels() -> None:
    reg = _registry()
    assert [s.name for s in reg.subjects_for("W1")] == ["actr_trio", "fast", "slow"]
    w1 = reg.workloads["W1"]
    fast = reg.find("W1", "fast")
    assert fast is not None
    assert fast.size(w1, quick=True) == 7
    assert fast.size(w1, quick=False) == 100

    def measured(size: int) -> h.Measurement:
        """First line is the label.

        Not this one."""
        return {}

    reg.subject("W8", "documented")(measured)
    found = reg.find("W8", "documented")
    assert found is not None
    assert found.label == "First line is the label."


def test_load_registry_reports_absent_and_broken_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h, "RUNTIME_MODULE", "benchmarks._no_such_runtime_module")
    assert h.load_registry()[1] == "absent"

    (tmp_path / "bench_rt_raises.py").write_text("raise RuntimeError('half written')\n")
    (tmp_path / "bench_rt_missing_dep.py").write_text("import not_installed_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(h, "RUNTIME_MODULE", "bench_rt_raises")
    status = h.load_registry()[1]
    assert status.startswith("error")
    assert "half written" in status
    monkeypatch.setattr(h, "RUNTIME_MODULE", "bench_rt_missing_dep")
    assert "not_installed_dep_xyz" in h.load_registry()[1]


# -- running, results document -----------------------------------------------------------------


def test_run_suite_interleaves_reps_and_computes_ratios() -> None:
    runner = FakeRunner()
    doc = _run(runner=runner)
    h.validate_document(doc)
    w1_calls = [(name, size) for wid, name, size in runner.calls if wid == "W1"]
    assert w1_calls == [("actr_trio", 10), ("fast", 7), ("slow", 10)] * 3

    w1 = _workload(doc, "W1")
    rt = w1["subjects"][0]
    assert rt["metrics"]["msgs_per_s"]["median"] == 300.0
    assert rt["metrics"]["msgs_per_s"]["min"] == 270.0
    ratios = {r["baseline"]: r for r in w1["ratios"]}
    assert ratios["fast"]["ratio"] == pytest.approx(1.5)
    assert ratios["fast"]["min"] == pytest.approx(1.5)  # per-rep pairs: 300/200, 330/220, 270/180
    assert ratios["slow"]["ratio"] == pytest.approx(3.0)
    assert (ratios["slow"]["min"], ratios["slow"]["max"]) == (
        pytest.approx(2.7),
        pytest.approx(3.3),
    )

    (w2_ratio,) = _workload(doc, "W2")["ratios"][:1]
    assert w2_ratio["ratio"] == pytest.approx(0.5)  # twice the latency: half as fast

    targets = {t["target"]: t for t in w1["targets"]}
    assert targets["msgs_per_s >= 250"]["met"] is True
    assert targets["msgs_per_s >= 1.2x fast"]["measured"] == pytest.approx(1.5)
    assert h.problems(doc) == ["W2 broken (baseline): RuntimeError: boom", _W8_MISSING]


_W8_MISSING = "W8 actr_trio (runtime): not registered: benchmarks/runtime.py is absent"


def test_failing_subject_is_an_error_row_and_not_retried() -> None:
    runner = FakeRunner()
    doc = _run(runner=runner)
    assert [c for c in runner.calls if c[1] == "broken"] == [("W2", "broken", 5)]
    w2 = _workload(doc, "W2")
    broken = next(s for s in w2["subjects"] if s["name"] == "broken")
    assert broken["status"] == "error"
    assert "boom" in broken["error"]
    ratio = next(r for r in w2["ratios"] if r["baseline"] == "broken")
    assert ratio["ratio"] is None
    table = h.render_markdown(doc)
    assert "| W2 | actr_trio | broken | p50_us | n/a |" in table
    assert "| **FAILED**: RuntimeError: boom |" in table
    assert "**2 problem(s)**" in table
    assert "* W2 broken (baseline): RuntimeError: boom" in table


def test_a_failure_after_some_reps_fails_the_subject() -> None:
    """Two good reps and a failure are not a result: the row is an error, without a ratio."""

    class FailsThird(FakeRunner):
        def __call__(self, subject: h.Subject, size: int) -> h.Measurement:
            if subject.name == "slow" and self.reps.get(("W1", "slow")) == 2:
                raise TimeoutError("timed out after 120s")
            return super().__call__(subject, size)

    doc = _run(runner=FailsThird())
    w1 = _workload(doc, "W1")
    slow = next(s for s in w1["subjects"] if s["name"] == "slow")
    assert slow["status"] == "error"
    assert slow["error"] == "rep 3 of 3: TimeoutError: timed out after 120s"
    assert slow["metrics"]["msgs_per_s"]["n"] == 2  # kept for the record
    assert next(r for r in w1["ratios"] if r["baseline"] == "slow")["ratio"] is None
    assert "W1 slow (baseline): rep 3 of 3: TimeoutError: timed out after 120s" in h.problems(doc)


def test_a_subject_without_its_headline_figure_fails() -> None:
    class NoHeadline(FakeRunner):
        def __call__(self, subject: h.Subject, size: int) -> h.Measurement:
            figures = super().__call__(subject, size)
            return {"p99_us": 1.0} if subject.name == "base" else figures

    w2 = _workload(_run(runner=NoHeadline()), "W2")
    base = next(s for s in w2["subjects"] if s["name"] == "base")
    assert base["status"] == "error"
    assert base["error"] == "reported no p50_us (figures: p99_us)"


def test_missing_runtime_subject_is_an_error_row() -> None:
    """A runtime subject the workload expects but nobody registered (runtime.py absent or
    broken) is an error row beside the baselines, never a silent blank."""
    reg = _registry()
    reg.subjects = [s for s in reg.subjects if s.kind != "runtime"]
    doc = h.run_suite(
        reg,
        quick=True,
        reps=3,
        runtime_module="error: ImportError('half written')",
        progress=h.Progress(io.StringIO()),
        runner=FakeRunner(),
    )
    h.validate_document(doc)
    w1 = _workload(doc, "W1")
    missing = w1["subjects"][0]
    assert (missing["name"], missing["kind"], missing["status"]) == (
        "actr_trio",
        "runtime",
        "error",
    )
    assert missing["error"] == (
        "not registered: benchmarks/runtime.py failed to import (ImportError('half written'))"
    )
    assert [s["name"] for s in w1["subjects"]] == ["actr_trio", "fast", "slow"]
    assert all(r["ratio"] is None for r in w1["ratios"])
    assert all(t["met"] is None for t in w1["targets"])
    failed = h.problems(doc)
    assert sum("actr_trio (runtime): not registered" in p for p in failed) == 3  # W1, W2, W8
    table = h.render_markdown(doc)
    assert "| W1 tells | actr_trio | runtime | — | **FAILED**: not registered" in table
    assert "| W8 | — | — | start_ms | n/a (no runtime/baseline pair) |" in table


def test_w3_runtime_rows_fail_loudly_without_the_runtime_module() -> None:
    """The real W3 workload: both durable runtime rows are error rows when runtime.py did not
    register them, their targets are n/a, and the run has problems (non-zero exit)."""
    real, _ = h.load_registry()
    reg = h.Registry()
    reg.add_workload(real.workloads["W3"])
    baselines = [s for s in real.subjects_for("W3") if s.kind == "baseline"]
    for s in baselines:
        reg.add_subject(s)

    def runner(subject: h.Subject, size: int) -> h.Measurement:
        return {"msgs_per_s": 1000.0}

    doc = h.run_suite(
        reg,
        quick=True,
        reps=2,
        runtime_module="absent",
        progress=h.Progress(io.StringIO()),
        runner=runner,
    )
    w3 = _workload(doc, "W3")
    rows = {s["name"]: s["status"] for s in w3["subjects"]}
    assert rows["actr_trio-normal"] == rows["actr_trio-full"] == "error"
    assert {t["runtime"] for t in w3["targets"]} == {"actr_trio-normal", "actr_trio-full"}
    assert all(t["met"] is None for t in w3["targets"])
    assert any(
        p.startswith("W3 actr_trio-normal (runtime): not registered") for p in h.problems(doc)
    )


def test_cli_exits_non_zero_when_a_subject_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = _registry()
    monkeypatch.setattr(bench_run, "load_registry", lambda: (reg, "loaded"))

    def fake_suite(registry: h.Registry, **kwargs: Any) -> dict[str, Any]:
        return _run(registry)

    monkeypatch.setattr(bench_run, "run_suite", fake_suite)
    assert (
        bench_run.main(["--quick", "--out", str(tmp_path), "--no-chart"]) == bench_run.EXIT_FAILED
    )
    err = capsys.readouterr().err
    assert "FAILED: W2 broken (baseline): RuntimeError: boom" in err
    assert list(tmp_path.glob("*.json"))  # the results are written all the same

    reg.subjects = [s for s in reg.subjects if s.name != "broken"]
    reg.runtime("W8")(lambda size: {})
    assert bench_run.main(["--quick", "--out", str(tmp_path), "--no-chart"]) == 0


def test_only_selects_workloads() -> None:
    doc = h.run_suite(
        _registry(),
        quick=True,
        only=["W2"],
        reps=3,
        progress=h.Progress(io.StringIO()),
        runner=FakeRunner(),
    )
    assert [w["id"] for w in doc["workloads"]] == ["W2"]


def test_document_round_trips_through_json_and_validation_catches_damage() -> None:
    doc = json.loads(json.dumps(_run()))
    h.validate_document(doc)
    assert doc["schema"] == h.SCHEMA
    assert doc["quick"] is True
    assert doc["reps_per_subject"] == 3
    with pytest.raises(ValueError, match="schema"):
        h.validate_document({**doc, "schema": "other/1"})
    broken = json.loads(json.dumps(doc))
    broken["workloads"][0]["subjects"][1]["metrics"]["msgs_per_s"].pop("median")
    with pytest.raises(ValueError, match="median"):
        h.validate_document(broken)
    broken = json.loads(json.dumps(doc))
    broken["workloads"][0]["subjects"][1]["kind"] = "peer"
    with pytest.raises(ValueError, match="kind"):
        h.validate_document(broken)


def test_markdown_table_rows() -> None:
    table = h.render_markdown(_run())
    assert "| W1 tells | actr_trio | runtime | 10 | msgs_per_s 300 (270..330) |  |" in table
    assert "| W1 | actr_trio | slow | msgs_per_s | 3.00x (2.70..3.30) |" in table
    assert "p99_us 40.0" in table
    assert "| W1 | actr_trio | msgs_per_s >= 250 | 300 | yes | — |" in table
    assert "| W1 | actr_trio | msgs_per_s >= 1.2x fast | 1.50x | yes | — |" in table


def test_progress_line_without_terminal() -> None:
    out = io.StringIO()
    p = h.Progress(out)
    p.update("W1 fast rep 1/3")
    p.done()
    assert "W1 fast rep 1/3" in out.getvalue()


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    h.render_chart(_run(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- regression check --------------------------------------------------------------------------


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(doc))
    return copied


def _with_ratio(
    doc: dict[str, Any], baseline: str, value: float | None, spread: float | None = None
) -> dict[str, Any]:
    """``doc`` with W1's ratio vs ``baseline`` set to ``value``; its per-rep range is
    ``value`` +- ``spread`` (relative), or the old range scaled along."""
    new = _copy(doc)
    for r in _workload(new, "W1")["ratios"]:
        if r["baseline"] != baseline:
            continue
        if value is None:
            r["ratio"] = r["min"] = r["max"] = None
        elif spread is not None:
            r["ratio"], r["min"], r["max"] = value, value * (1 - spread), value * (1 + spread)
        else:
            scale = value / r["ratio"]
            r["ratio"], r["min"], r["max"] = value, r["min"] * scale, r["max"] * scale
    return new


FAST = "W1 actr_trio vs fast (msgs_per_s)"  # 1.5x, every rep 1.5x: spread 0
SLOW = "W1 actr_trio vs slow (msgs_per_s)"  # 3.0x, reps 2.7..3.3: spread 10 %


def _row(result: h.Comparison, key: str) -> str:
    return next(line for line in result.lines if line.startswith(f"| {key} |"))


def test_compare_threshold_is_the_spread_of_both_runs() -> None:
    old = _run()
    # slow: spreads 10 % + 10 % -> a fall counts beyond 20 %
    assert not h.compare_documents(old, _with_ratio(old, "slow", 2.5)).failed  # -16.7 %
    fell = h.compare_documents(old, _with_ratio(old, "slow", 2.3))  # -23.3 %
    assert fell.regressions == [SLOW]
    assert "| -23.3% | 20% | **REGRESSION** |" in _row(fell, SLOW)
    # fast: both runs' reps agree exactly, so the floor applies: 5 %
    steady = h.compare_documents(old, _with_ratio(old, "fast", 1.4))  # -6.7 %
    assert steady.regressions == [FAST]
    assert "| 1.50x (1.50..1.50) | 1.40x (1.40..1.40) | -6.7% | 5% |" in _row(steady, FAST)
    assert not h.compare_documents(old, _with_ratio(old, "fast", 1.45)).failed  # -3.3 %
    # the same fall in a noisy new run (reps 1.0..1.8) is within its noise: not a regression
    noisy = h.compare_documents(old, _with_ratio(old, "fast", 1.4, spread=0.3))
    assert not noisy.failed
    assert "| -6.7% | 30% |" in _row(noisy, FAST)
    # improvements never regress
    assert not h.compare_documents(old, _with_ratio(old, "slow", 6.0)).failed
    # a lower floor is honoured
    lower = h.compare_documents(old, _with_ratio(old, "fast", 1.45), min_threshold=0.01)
    assert lower.regressions == [FAST]


def test_compare_a_fixed_threshold_would_be_wrong_both_ways() -> None:
    """A noisy row (like W6 here: per-rep ratios 1.09..1.36) falling 23 % in a noisier run is
    noise; a steady row falling 10 % is real. A fixed 20 % gets both wrong."""
    old = _with_ratio(_run(), "slow", 1.17, spread=0.115)
    new = _with_ratio(_with_ratio(old, "slow", 0.9, spread=0.39), "fast", 1.35)
    result = h.compare_documents(old, new)
    assert result.regressions == [FAST]
    assert _row(result, SLOW).endswith("| -23.1% | 50% |  |")


def test_compare_gates_on_ratios_only() -> None:
    """Absolute figures halved (a busier machine) and targets no longer met, ratios unchanged:
    nothing regresses. Ratios fallen with absolute figures unchanged: a regression."""
    old = _run()
    slower = _copy(old)
    for w in slower["workloads"]:
        for s in w["subjects"]:
            for m in s["metrics"].values():
                for part in ("median", "min", "max", "q1", "q3"):
                    m[part] /= 2
        for t in w["targets"]:
            t["met"] = False
    result = h.compare_documents(old, slower)
    assert not result.failed
    assert all("msgs_per_s >=" not in line for line in result.lines)  # targets are not rows
    assert h.compare_documents(old, _with_ratio(old, "slow", 2.0)).regressions == [SLOW]


def test_compare_lost_ratios_and_partial_runs() -> None:
    old = _run()
    lost = h.compare_documents(old, _with_ratio(old, "fast", None))
    assert lost.regressions == [FAST]
    assert "| lost | — | **REGRESSION** |" in _row(lost, FAST)
    never = h.compare_documents(_with_ratio(old, "fast", None), _with_ratio(old, "fast", None))
    assert not never.failed
    assert _row(never, FAST) == f"| {FAST} | n/a | n/a | n/a | — |  |"
    only_w2 = {**old, "workloads": [_workload(old, "W2")]}
    assert not h.compare_documents(old, only_w2).failed  # --only runs skip absent workloads
    no_range = _copy(old)
    for r in _workload(no_range, "W1")["ratios"]:
        r.pop("min")
        r.pop("max")
    unknown = h.compare_documents(no_range, _with_ratio(old, "fast", 0.5))
    assert not unknown.failed
    assert "| -66.7% | unknown (no per-rep range) | not gated |" in _row(unknown, FAST)


def test_compare_refuses_quick_against_full_and_single_reps() -> None:
    quick = _run()
    full = {**_copy(quick), "quick": False, "reps_per_subject": 5}
    with pytest.raises(h.IncomparableRuns, match=r"quick run .* with a full run"):
        h.compare_documents(quick, full)
    with pytest.raises(h.IncomparableRuns, match=r"full run .* with a quick run"):
        h.compare_documents(full, quick)
    with pytest.raises(h.IncomparableRuns, match="1 repetition"):
        h.compare_documents(quick, {**quick, "reps_per_subject": 1})


def test_cli_compare_against_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _run()
    paths = {name: tmp_path / f"{name}.json" for name in ("old", "same", "worse", "full")}
    paths["old"].write_text(json.dumps(old))
    paths["same"].write_text(json.dumps(old))
    paths["worse"].write_text(json.dumps(_with_ratio(old, "slow", 2.0)))
    paths["full"].write_text(json.dumps({**old, "quick": False}))

    def main(*args: str) -> int:
        return bench_run.main([*args])

    assert main("--compare", str(paths["old"]), "--against", str(paths["same"])) == 0
    assert main("--compare", str(paths["old"]), "--against", str(paths["worse"])) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    assert "-33.3%" in out
    assert main("--against", str(paths["worse"])) == 2
    assert main("--compare", str(paths["full"]), "--against", str(paths["old"])) == 2
    assert "refusing to compare a full run" in capsys.readouterr().err


def test_cli_refuses_to_measure_a_quick_run_against_a_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full.json"
    full.write_text(json.dumps({**_run(), "quick": False}))

    def must_not_measure(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("refused before measuring")

    monkeypatch.setattr(bench_run, "load_registry", must_not_measure)
    monkeypatch.setattr(bench_run, "run_suite", must_not_measure)
    assert bench_run.main(["--quick", "--compare", str(full), "--out", str(tmp_path)]) == 2
    assert "refusing to compare a full run" in capsys.readouterr().err


def test_compare_to_limits_pairs_and_keeps_unknown_names_visible() -> None:
    reg = _registry()
    reg.subjects = [s for s in reg.subjects if not (s.workload == "W1" and s.kind == "runtime")]
    reg.runtime("W1", compare_to=("fast", "nope"))(lambda size: {})
    w1 = _workload(_run(reg), "W1")
    got = {r["baseline"]: r["ratio"] for r in w1["ratios"]}
    assert got == {"fast": pytest.approx(1.5), "nope": None}


# -- the real workloads: rows and targets of issue 10 ------------------------------------------


def test_every_expected_runtime_subject_is_registered() -> None:
    """What the workloads expect, runtime.py registers: W1 has both ways of telling."""
    reg, status = h.load_registry()
    assert status == "loaded"
    for wid, w in reg.workloads.items():
        names = {s.name for s in reg.subjects_for(wid)}
        assert set(w.runtimes) <= names, wid
    w1 = {s.name: s.kind for s in reg.subjects_for("W1")}
    assert w1 == {
        "actr_trio": "runtime",
        "actr_trio-tell_many": "runtime",
        "raw-trio": "baseline",
        "raw-trio-256": "baseline",
        "pykka": "baseline",
    }
    assert reg.workloads["W1"].runtimes == ("actr_trio", "actr_trio-tell_many")


def test_issue_10_targets_are_the_bench_targets() -> None:
    reg, _ = h.load_registry()
    declared = {
        (wid, t.runtime, t.describe())
        for wid, w in reg.workloads.items()
        for t in w.targets
        if "10" in t.source
    }
    assert declared == {
        ("W1", "actr_trio", "msgs_per_s >= 1x raw-trio"),
        ("W1", "actr_trio-tell_many", "msgs_per_s >= 1.2x pykka"),
        ("W2", None, "p50_us <= 1.3x raw-trio-event"),
        ("W3", "actr_trio-normal", "msgs_per_s >= 0.5x sqlite-normal-batch256"),
        ("W3", "actr_trio-full", "msgs_per_s >= 0.5x sqlite-full-batch256"),
        ("W4", None, "msgs_per_s >= 0.8x raw-trio"),
    }


def test_latency_target_against_a_baseline_is_a_figure_ratio() -> None:
    """``p50_us <= 1.3x base``: the runtime's p50 over the baseline's (20 / 10 = 2.0: not met),
    shown beside the row with who set it."""
    reg = _registry()
    reg.workloads["W2"] = dataclasses.replace(
        reg.workloads["W2"],
        targets=(h.Target("p50_us", "<=", 1.3, baseline="base", source="issue 10"),),
    )
    doc = _run(reg)
    (target,) = _workload(doc, "W2")["targets"]
    assert target["measured"] == pytest.approx(2.0)
    assert target["met"] is False
    assert "| W2 | actr_trio | p50_us <= 1.3x base | 2.00x | **no** | issue 10 |" in (
        h.render_markdown(doc)
    )


def _tell_many_registry(tell_many: h.MeasureFn) -> h.Registry:
    reg = h.Registry()
    reg.add_workload(
        h.Workload(
            "W1",
            "tells",
            headline="msgs_per_s",
            higher_is_better=True,
            quick_size=10,
            full_size=100,
            runtimes=("actr_trio", "actr_trio-tell_many"),
            targets=(
                h.Target("msgs_per_s", ">=", 1.2, baseline="pykka", runtime="actr_trio-tell_many"),
            ),
        )
    )
    reg.runtime("W1")(lambda size: {"msgs_per_s": 100.0})
    reg.runtime("W1", "actr_trio-tell_many")(tell_many)
    reg.subject("W1", "raw-trio")(lambda size: {"msgs_per_s": 200.0})
    reg.subject("W1", "raw-trio-256")(lambda size: {"msgs_per_s": 150.0})
    reg.subject("W1", "pykka")(lambda size: {"msgs_per_s": 500.0})
    return reg


def _in_process_suite(reg: h.Registry) -> dict[str, Any]:
    return h.run_suite(
        reg,
        quick=True,
        reps=3,
        progress=h.Progress(io.StringIO()),
        runner=h.run_in_process,
    )


def test_tell_many_row_runs_beside_the_per_message_row() -> None:
    doc = _in_process_suite(_tell_many_registry(lambda size: {"msgs_per_s": 700.0}))
    w1 = _workload(doc, "W1")
    assert [s["name"] for s in w1["subjects"]] == [
        "actr_trio",
        "actr_trio-tell_many",
        "raw-trio",
        "raw-trio-256",
        "pykka",
    ]
    ratios = {(r["runtime"], r["baseline"]): r["ratio"] for r in w1["ratios"]}
    assert ratios[("actr_trio-tell_many", "pykka")] == pytest.approx(1.4)
    assert ratios[("actr_trio", "raw-trio-256")] == pytest.approx(100 / 150)
    (target,) = w1["targets"]
    assert (target["runtime"], target["met"]) == ("actr_trio-tell_many", True)
    assert h.problems(doc) == []


def test_tell_many_row_fails_loudly_without_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The subject raises what benchmarks/runtime.py raises when ActrRef has no tell_many:
    an error row, the target n/a, and a non-zero exit; the other rows still measured."""
    from benchmarks import runtime as bench_runtime

    class OldRef:
        async def tell(self, target: object, route_key: str, payload: bytes) -> None: ...

    def without_api(size: int) -> h.Measurement:
        bench_runtime._tell_many_of(OldRef())  # type: ignore[arg-type]
        raise AssertionError("unreachable: the API is missing")

    reg = _tell_many_registry(without_api)
    doc = _in_process_suite(reg)
    w1 = _workload(doc, "W1")
    row = next(s for s in w1["subjects"] if s["name"] == "actr_trio-tell_many")
    assert row["status"] == "error"
    assert "ActrRef.tell_many does not exist" in row["error"]
    assert w1["targets"][0]["met"] is None
    assert next(s for s in w1["subjects"] if s["name"] == "pykka")["status"] == "ok"
    assert len(h.problems(doc)) == 1

    monkeypatch.setattr(bench_run, "load_registry", lambda: (reg, "loaded"))
    monkeypatch.setattr(bench_run, "run_suite", lambda registry, **kw: _in_process_suite(registry))
    assert (
        bench_run.main(["--quick", "--out", str(tmp_path), "--no-chart"]) == bench_run.EXIT_FAILED
    )
    assert "FAILED: W1 actr_trio-tell_many (runtime): RuntimeError: ActrRef.tell_many" in (
        capsys.readouterr().err
    )


def test_tell_many_of_returns_the_method_when_it_exists() -> None:
    from benchmarks import runtime as bench_runtime

    class NewRef:
        async def tell_many(self, target: object, route_key: str, messages: list[bytes]) -> None:
            pass

    ref = NewRef()
    assert bench_runtime._tell_many_of(ref) == ref.tell_many  # type: ignore[arg-type]
