"""Reading a run folder (quickstart or sweep) back into typed records for the report.

Layout shared by both: students/<name>/provenance.json, analysis/<name>/step_<N>.json and
circuit_step_<N>.json, pair-analysis/<name>/analysis.json (sensitivity, noise, shift).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kdmech.analysis.pair import PairAnalysis
from kdmech.errors import KdmechError


@dataclass
class StudentRecord:
    name: str
    capacity: dict
    parameters: int | None
    teacher_parameters: int | None
    steps: list[PairAnalysis]
    circuit: dict | None = None
    """The last circuit_step_<N>.json."""
    pair: dict | None = None
    """pair-analysis/<name>/analysis.json, when present."""
    folder: Path = field(default_factory=Path)

    @property
    def final(self) -> PairAnalysis:
        return self.steps[-1]

    @property
    def param_ratio(self) -> float:
        if self.parameters and self.teacher_parameters:
            return self.parameters / self.teacher_parameters
        return self.capacity.get("depth", 1) * self.capacity.get("width", 1) ** 2


def _step(path: Path) -> int:
    return int(re.search(r"_(\d+)\.json$", path.name).group(1))


def _summary_params(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for name in ("summary.json", "sweep.json"):
        f = root / name
        if f.exists():
            for s in json.loads(f.read_text()).get("students", []):
                if s and "parameters" in s:
                    out[s["name"]] = (s["parameters"], s.get("teacher_parameters"))
    return out


def collect(root: str | Path) -> list[StudentRecord]:
    root = Path(root)
    analysis = root / "analysis"
    if not analysis.is_dir():
        raise KdmechError(f"{str(root)!r} is not a kdmech run folder (no analysis/ inside); "
                          f"pass the folder a quickstart or sweep wrote")
    params = _summary_params(root)
    records = []
    for folder in sorted(p for p in analysis.iterdir() if p.is_dir()):
        steps = sorted(folder.glob("step_*.json"), key=_step)
        if not steps:
            continue
        prov_file = root / "students" / folder.name / "provenance.json"
        prov = json.loads(prov_file.read_text()) if prov_file.exists() else {}
        circuits = sorted(folder.glob("circuit_step_*.json"), key=_step)
        pair_file = root / "pair-analysis" / folder.name / "analysis.json"
        p, tp = params.get(folder.name, (None, None))
        records.append(StudentRecord(
            name=folder.name, capacity=prov.get("capacity", {}), parameters=p, teacher_parameters=tp,
            steps=[PairAnalysis.from_json(json.loads(s.read_text())) for s in steps],
            circuit=json.loads(circuits[-1].read_text()) if circuits else None,
            pair=json.loads(pair_file.read_text()) if pair_file.exists() else None, folder=folder))
    if not records:
        raise KdmechError(f"{str(root)!r} holds no analysed students (analysis/<name>/step_<N>.json)")
    return sorted(records, key=lambda r: r.param_ratio)
