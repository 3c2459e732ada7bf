"""Run one repetition of one subject in this fresh interpreter (spawned by the harness).

Usage: ``python -m benchmarks._worker WORKLOAD SUBJECT SIZE RESULT_JSON [--pin-cpu=N]``. Writes
``{"ok": true, "figures": {...}}`` or ``{"ok": false, "error": "..."}`` to RESULT_JSON.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from benchmarks._harness import load_registry


def main(argv: list[str]) -> int:
    workload, name, size, result_path, *options = argv
    for option in options:
        if option.startswith("--pin-cpu="):
            os.sched_setaffinity(0, {int(option.split("=", 1)[1])})
    out = Path(result_path)
    registry, status = load_registry()
    found = registry.find(workload, name)
    if found is None:
        payload = {"ok": False, "error": f"no subject {workload}/{name} (runtime module: {status})"}
    else:
        try:
            figures = found.measure(int(size))
            payload = {"ok": True, "figures": {k: float(v) for k, v in figures.items()}}
        except Exception as exc:
            traceback.print_exc()
            payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(payload))
    return 0 if payload["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
