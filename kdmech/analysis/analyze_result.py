"""The result of `kdmech analyze` — what `analysis.json` holds — as a type.

`kdmech analyze` builds one `AnalyzeResult` and writes `to_json()`; the report, the W&B summary
and the capacity figures read it back with `load`, through the accessors below instead of
string paths. The sections whose shape belongs to one analysis (influence, matching,
alignment, sensitivity, circuit sweeps, noise curve, shift rows, probes) stay their analysis'
own JSON; the accessors name the numbers readers take out of them. Keys this version does not
know are kept in `extra` and written back unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kdmech.analysis.circuit import REFERENCE_THRESHOLD
from kdmech.analysis.pair import WorstDrop

SECTIONS = ("sensitivity", "circuit", "noise", "shift", "probes")
"""The optional analyses, in the order analysis.json holds them."""


@dataclass
class AnalyzeResult:
    teacher: str
    student: str
    task: str
    """The task as the prompts name it (e.g. ioi-wang under the authors' template set)."""
    teacher_weak: bool
    teacher_competence: dict
    n_prompts: int
    options: dict
    """The `AnalyzeOptions` the analysis ran with."""
    analyses: list[str]
    logit_diff: dict
    influence: dict
    matching: dict
    alignment: dict
    """A with its parts, bootstrap interval (`ci95`), inputs and (authors' MLP score) sign range."""
    worst_drop: WorstDrop
    sensitivity: dict | None = None
    circuit: dict | None = None
    """who → its threshold sweep (`CircuitSweep.to_json`)."""
    noise: dict | None = None
    shift: list | None = None
    probes: dict | None = None
    wall_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    """Keys of the file this version does not know."""

    @property
    def A(self) -> float:
        return self.alignment["A"]

    @property
    def A_ci95(self) -> tuple[float, float]:
        low, high = self.alignment["ci95"]["A"]
        return low, high

    @property
    def sign_range(self) -> tuple[float, float] | None:
        """A's range over the eigenvector sign choices (the authors' MLP score only)."""
        r = self.alignment.get("sign_range")
        return tuple(r["A"]) if r else None

    def severity(self, who: str = "student", group: str = "heads") -> float | None:
        """The sensitivity severity of one model's node group; None without sensitivity."""
        return self.sensitivity[who][group]["severity"] if self.sensitivity else None

    def reference_circuit(self, who: str) -> dict | None:
        """The circuit of `who` at T = 0.20; None without circuits."""
        if not self.circuit:
            return None
        sweep = self.circuit[who]
        threshold = sweep.get("reference_threshold", REFERENCE_THRESHOLD)
        return next((c for c in sweep["circuits"] if abs(c["threshold"] - threshold) < 1e-9), None)

    def to_json(self) -> dict:
        out = {"teacher": self.teacher, "student": self.student, "task": self.task,
               "teacher_weak": self.teacher_weak, "teacher_competence": self.teacher_competence,
               "n_prompts": self.n_prompts, "options": self.options, "analyses": self.analyses,
               "logit_diff": self.logit_diff, "influence": self.influence, "matching": self.matching,
               "alignment": self.alignment, "worst_drop": self.worst_drop.to_json()}
        out |= {k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None}
        return out | {"wall_seconds": self.wall_seconds} | self.extra

    @classmethod
    def from_json(cls, d: dict) -> AnalyzeResult:
        known = {"teacher", "student", "task", "teacher_weak", "teacher_competence", "n_prompts", "options",
                 "analyses", "logit_diff", "influence", "matching", "alignment", "worst_drop",
                 "wall_seconds", *SECTIONS}
        return cls(**{k: d[k] for k in known - {"worst_drop", "wall_seconds", *SECTIONS}},
                   worst_drop=WorstDrop.from_json(d["worst_drop"]),
                   wall_seconds=d.get("wall_seconds", 0.0), **{k: d.get(k) for k in SECTIONS},
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def load(cls, path: str | Path) -> AnalyzeResult:
        return cls.from_json(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))
