"""Entry point: ``python -m benchmarks.run [--quick] [--compare FILE.json] [--only W1,W2] [--out DIR]``.

Measures every registered subject (the runtime from ``benchmarks/runtime.py`` when present, and
the baselines) and writes a Markdown table on stdout, ``<out>/<YYYY-MM-DD>[-quick].json`` and a
PNG chart of the speed ratios next to it. ``--compare OLD.json`` then prints each ratio's change
and exits with status 1 when one fell beyond the noise of the two runs (benchmarks/_compare.py);
``--compare OLD.json --against NEW.json`` compares two result files without measuring anything.
A quick run is never compared with a full one (status 2).

Exit status: 0 all measured (targets met or not); 1 a ratio regressed; 2 bad usage or runs that
cannot be compared; 3 a subject failed or is missing, or a ratio or target could not be
computed (the results are written all the same).
"""

from __future__ import annotations

import argparse
import compileall
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks._compare import MIN_THRESHOLD, IncomparableRuns, check_comparable
from benchmarks._harness import (
    REPO_ROOT,
    compare_documents,
    load_registry,
    problems,
    render_chart,
    render_markdown,
    run_suite,
    validate_document,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
EXIT_REGRESSION = 1
EXIT_USAGE = 2
#: A subject failed or is missing, or a ratio or target could not be computed.
EXIT_FAILED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 reps, small sizes (< 3 min)")
    p.add_argument("--only", default="", help="comma-separated workload ids, e.g. W1,W5")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    p.add_argument("--compare", type=Path, help="earlier results JSON to check ratios against")
    p.add_argument(
        "--against", type=Path, help="with --compare: compare to this JSON instead of measuring"
    )
    p.add_argument("--reps", type=int, help="repetitions per subject (default 3 quick, 5 full)")
    p.add_argument(
        "--min-threshold",
        type=float,
        default=MIN_THRESHOLD,
        help="smallest fall of a ratio that counts, as a fraction (default 0.05); each ratio's "
        "threshold is the two runs' spreads added, at least this",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run subjects in this process (debugging; no per-repetition timeout)",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    return p.parse_args(argv)


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    validate_document(doc)
    return doc


def _compare(old: dict[str, Any], new: dict[str, Any], min_threshold: float) -> int:
    try:
        result = compare_documents(old, new, min_threshold)
    except IncomparableRuns as exc:
        print(f"--compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(result.lines))
    if result.failed:
        print(f"\n{len(result.regressions)} ratio(s) fell beyond the noise of both runs.")
        return EXIT_REGRESSION
    return 0


def _compile_sources() -> None:
    """Byte-compile the source tree's packages before measuring: the rows import ``actr_trio``
    from this checkout (an editable install), which pip never compiled, and with
    ``PYTHONDONTWRITEBYTECODE`` set (as on our CI machines) every fresh process would compile
    it again, while the baselines' libraries load compiled from site-packages. A user's
    ``pip install actr-trio`` compiles at install time: this measures what they run."""
    for package in ("actr_trio", "benchmarks"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.against is not None:
        if args.compare is None:
            print("--against needs --compare OLD.json", file=sys.stderr)
            return EXIT_USAGE
        return _compare(_load(args.compare), _load(args.against), args.min_threshold)
    old = _load(args.compare) if args.compare is not None else None
    if old is not None:
        # Refuse before measuring: a quick run against a full one would waste the run.
        try:
            check_comparable(old, {"quick": args.quick, "reps_per_subject": args.reps})
        except IncomparableRuns as exc:
            print(f"--compare: {exc}", file=sys.stderr)
            return EXIT_USAGE

    _compile_sources()
    registry, runtime_status = load_registry()
    if runtime_status != "loaded":
        what = "is absent" if runtime_status == "absent" else f"failed to import ({runtime_status})"
        print(f"error: benchmarks/runtime.py {what}: every runtime row fails", file=sys.stderr)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in registry.workloads]
    if unknown:
        print(
            f"unknown workload(s) {unknown}; known: {sorted(registry.workloads)}", file=sys.stderr
        )
        return EXIT_USAGE

    doc = run_suite(
        registry,
        quick=args.quick,
        only=only or None,
        reps=args.reps,
        isolate=not args.in_process,
        runtime_module=runtime_status,
    )
    validate_document(doc)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = doc["date"] + ("-quick" if args.quick else "") + ("-" + "-".join(only) if only else "")
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(render_markdown(doc))
    print(f"results: {json_path} ({doc['duration_s']:.0f} s)", file=sys.stderr)
    if not args.no_chart:
        png_path = args.out / f"{stem}.png"
        try:
            render_chart(doc, png_path)
            print(f"chart: {png_path}", file=sys.stderr)
        except ImportError:
            print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)

    failed = problems(doc)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    status = _compare(old, doc, args.min_threshold) if old is not None else 0
    if failed:
        print(f"{len(failed)} problem(s): exit {EXIT_FAILED}", file=sys.stderr)
        return status or EXIT_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
