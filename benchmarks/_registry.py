"""Workloads, subjects and the targets they are held to (the registry the harness runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks._stats import MeasureFn, format_value

Kind = Literal["runtime", "baseline"]


@dataclass(frozen=True)
class Target:
    """A target of an issue, checked against a runtime subject's medians of the same run.

    ``baseline=None``: the runtime's median of ``metric`` compared with ``value``
    (``msgs_per_s >= 250k``). ``baseline="x"``: the runtime's median of ``metric`` divided
    by baseline ``x``'s median of it, compared with ``value`` (``p50_us <= 1.3x raw-trio-event``:
    a latency at most 1.3 times the baseline's; not the oriented speed ratio).
    ``runtime=None`` applies the target to every runtime subject of the workload.
    ``source`` says whose target it is (the issue that set it).
    """

    metric: str
    op: Literal[">=", "<="]
    value: float
    baseline: str | None = None
    runtime: str | None = None
    source: str = ""

    def describe(self) -> str:
        if self.baseline is None:
            return f"{self.metric} {self.op} {format_value(self.value)}"
        return f"{self.metric} {self.op} {self.value:g}x {self.baseline}"

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    headline: str  # figure the ratios are computed on; every subject must report it
    higher_is_better: bool
    quick_size: int
    full_size: int
    size_unit: str = "messages"
    targets: tuple[Target, ...] = ()
    # Run every subject pinned to one CPU (isolated runs only). For in-process workloads:
    # on this 2-vCPU VM a thread handoff across CPUs is bimodal (pykka ask p50 13 or 77 µs
    # from run to run); on one CPU it is stable, and it is pykka's best case.
    pin_cpu: bool = False
    # The runtime subjects this workload must have (``benchmarks/runtime.py`` registers them).
    # One that is not registered, e.g. because the module failed to import, is an error row
    # and makes the run exit non-zero: a missing subject is never skipped silently.
    runtimes: tuple[str, ...] = ("actr_trio",)


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
