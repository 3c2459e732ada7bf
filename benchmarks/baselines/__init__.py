"""Baseline subjects: what users would pick instead, measured in the same run as the runtime.

Importing a module here registers its subjects in ``benchmarks._harness.REGISTRY``. Modules
import their third-party dependencies (pykka, aiortc) inside the measure functions so that the
registry loads even when a bench-only dependency is missing; that subject then reports n/a.
"""

from __future__ import annotations

# Subjects register against workload ids: make sure those exist whichever module comes first.
import benchmarks.workloads  # noqa: F401

#: The modules imported by ``benchmarks._harness.load_registry``.
MODULES = (
    "trio_inproc",
    "pykka_inproc",
    "sqlite_queue",
    "trio_tcp",
    "aiortc_raw",
    "trio_websocket_raw",
)
