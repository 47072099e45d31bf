"""The typed record of one analysed checkpoint, and the only code that reads or writes it.

A `CheckpointRecord` is a `PairAnalysis` (influence, matching, A, worst drop, options) plus,
at circuit steps, a `CircuitRecord` (teacher and student circuits at T = 0.20 and the probes)
and, when asked for, the student's node attribution scores (`attribution.watch`, the key
"attribution" of the step file). On disk they are `step_<N>.json` and `circuit_step_<N>.json`
in the student's analysis folder
(`RunLayout`); the timeline, the report, the history CSVs and W&B all go through this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kdmech.analysis.attribution.watch import NodeAttribution
from kdmech.analysis.circuit import REFERENCE_THRESHOLD, Circuit
from kdmech.analysis.pair import PairAnalysis
from kdmech.run_layout import RunLayout


def _write_json(path: Path, data: dict) -> None:
    """Write next to the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


@dataclass(frozen=True)
class CircuitRecord:
    """Circuits (teacher and student at one T) and probes at one checkpoint, or why not."""

    step: int
    threshold: float = REFERENCE_THRESHOLD
    teacher: Circuit | None = None
    student: Circuit | None = None
    probes: dict = field(default_factory=dict)
    """{"teacher"|"student": {probe name: scores or {"error": why}}}."""
    error: str = ""
    """Why no circuit was found (e.g. a student that does not solve the task yet)."""
    teacher_weak: bool = False

    def to_json(self) -> dict:
        if self.error:
            return {"step": self.step, "error": self.error, "teacher_weak": self.teacher_weak}
        return {"step": self.step, "threshold": self.threshold, "teacher": self.teacher.to_json(),
                "student": self.student.to_json(), "probes": self.probes,
                "teacher_weak": self.teacher_weak}

    def save(self, layout: RunLayout, name: str) -> None:
        _write_json(layout.circuit_json(name, self.step), self.to_json())

    @classmethod
    def from_json(cls, d: dict) -> "CircuitRecord":
        if "error" in d:
            return cls(d["step"], error=d["error"], teacher_weak=d.get("teacher_weak", False))
        return cls(d["step"], d["threshold"], Circuit.from_json(d["teacher"]),
                   Circuit.from_json(d["student"]), d.get("probes", {}), "",
                   d.get("teacher_weak", False))


@dataclass(frozen=True)
class CheckpointRecord:
    pair: PairAnalysis
    circuits: CircuitRecord | None = None
    attribution: NodeAttribution | None = None
    """The student's node attribution scores at this step (`AnalysisSchedule.attribution_scores`)."""

    @property
    def step(self) -> int:
        return self.pair.step

    def save(self, layout: RunLayout, name: str) -> None:
        step = self.pair.to_json()
        if self.attribution is not None:
            step["attribution"] = self.attribution.to_json()
        _write_json(layout.step_json(name, self.step), step)
        if self.circuits is not None:
            self.circuits.save(layout, name)

    @classmethod
    def load(cls, layout: RunLayout, name: str, step: int) -> "CheckpointRecord":
        data = json.loads(layout.step_json(name, step).read_text())
        path = layout.circuit_json(name, step)
        circuits = CircuitRecord.from_json(json.loads(path.read_text())) if path.exists() else None
        attribution = NodeAttribution.from_json(data["attribution"]) if "attribution" in data else None
        return cls(PairAnalysis.from_json(data), circuits, attribution)

    @classmethod
    def load_all(cls, layout: RunLayout, name: str) -> list["CheckpointRecord"]:
        """Every analysed checkpoint of a student, in step order."""
        return [cls.load(layout, name, step) for step in layout.steps(name)]


def forget_steps(layout: RunLayout, name: str, first: int) -> None:
    """Remove a student's analyses of steps ≥ `first` (step and circuit JSONs, influence
    pictures, their rows in history.csv and steps.csv). A run that starts, or resumes, at step
    `first` analyses those steps again: the history never holds a step twice."""
    import csv

    layout = RunLayout(layout)
    for step in {*layout.steps(name), *layout.circuit_steps(name)}:
        if step >= first:
            for path in (layout.step_json(name, step), layout.circuit_json(name, step),
                         layout.influence_png(name, step)):
                path.unlink(missing_ok=True)
    for path in (layout.history_csv(name), layout.steps_csv(name)):
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames, list(reader)
        kept = [r for r in rows if int(r["step"]) < first]
        if len(kept) == len(rows):
            continue
        if not kept:
            path.unlink()
            continue
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        tmp.replace(path)


def last_circuits(records: list[CheckpointRecord]) -> CircuitRecord | None:
    """The latest circuit record of a run (None before any circuit step)."""
    found = [r.circuits for r in records if r.circuits is not None]
    return found[-1] if found else None
