"""Reading a run folder (quickstart or sweep) back into typed records for the report.

Layout shared by both: students/<name>/provenance.json, analysis/<name>/step_<N>.json and
circuit_step_<N>.json, pair-analysis/<name>/analysis.json (sensitivity, noise, shift).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kdmech.analysis.analyze_result import AnalyzeResult
from kdmech.analysis.pair import PairAnalysis
from kdmech.analysis.record import CheckpointRecord, last_circuits
from kdmech.errors import KdmechError
from kdmech.run_layout import RunLayout


@dataclass
class StudentRecord:
    name: str
    capacity: dict
    parameters: int | None
    teacher_parameters: int | None
    steps: list[PairAnalysis]
    circuit: dict | None = None
    """The last circuit_step_<N>.json."""
    pair: AnalyzeResult | None = None
    """pair-analysis/<name>/analysis.json, when present."""
    folder: Path = field(default_factory=Path)
    seed: int | None = None
    """The training seed (provenance.json; for older folders, the `-s<N>` of a sweep point's name)."""
    init: str = ""
    """How the student was initialised from the teacher (provenance.json)."""
    layer_map: dict = field(default_factory=dict)
    """Student layer → the teacher layer it was copied from (provenance.json; empty for a
    random init)."""
    heads_kept: dict = field(default_factory=dict)
    """Student layer → the teacher heads it copied (provenance.json; empty for a random init
    and for folders written before it was recorded)."""
    importance: dict | None = None
    """init importance: how the teacher was scored (metric, calibration data, layer ranking)."""
    birth_round: tuple[int, int] | None = None
    """(round, rounds) of a student pruned in rounds (`--capacity.rounds`)."""

    @property
    def final(self) -> PairAnalysis:
        return self.steps[-1]

    @property
    def param_ratio(self) -> float:
        if self.parameters and self.teacher_parameters:
            return self.parameters / self.teacher_parameters
        return self.capacity.get("depth", 1) * self.capacity.get("width", 1) ** 2


_SEED_IN_NAME = re.compile(r"(?:^|-)s(\d+)(?:-|$)")


def record_seed(name: str, provenance: dict) -> int | None:
    """The student's training seed: provenance.json records it; folders written before it did
    fall back to the `-s<N>` that `kdmech.sweep.point_name` puts in a sweep point's name; None
    when neither knows (e.g. a quickstart student of an older folder)."""
    if provenance.get("seed") is not None:
        return int(provenance["seed"])
    m = _SEED_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def _summary_params(layout: RunLayout) -> dict[str, tuple[int, int]]:
    out = {}
    for f in (layout.summary, layout.sweep_state):
        if f.exists():
            for s in json.loads(f.read_text()).get("students", []):
                if s and "parameters" in s:
                    out[s["name"]] = (s["parameters"], s.get("teacher_parameters"))
    return out


def _importance_summary(imp: dict | None) -> dict | None:
    """What the report shows of an importance ranking (the full scores stay in provenance.json)."""
    if not imp:
        return None
    return {k: imp.get(k) for k in ("metric", "data", "tokens", "layer_ranking", "blocks")}


def collect(root: str | Path) -> list[StudentRecord]:
    layout = RunLayout(root)
    if not layout.analysis_root.is_dir():
        raise KdmechError(f"{str(root)!r} is not a kdmech run folder (no analysis/ inside); "
                          f"pass the folder a quickstart or sweep wrote")
    params = _summary_params(layout)
    records = []
    for name in layout.analysed_students():
        prov_file = layout.provenance(name)
        prov = json.loads(prov_file.read_text()) if prov_file.exists() else {}
        checkpoints = CheckpointRecord.load_all(layout, name)
        circuits = last_circuits(checkpoints)
        pair_file = layout.pair_analysis_json(name)
        p, tp = params.get(name, (prov.get("parameters"), prov.get("teacher_parameters")))
        records.append(StudentRecord(
            name=name, capacity=prov.get("capacity", {}), parameters=p, teacher_parameters=tp,
            steps=[c.pair for c in checkpoints],
            circuit=circuits.to_json() if circuits else None,
            pair=AnalyzeResult.load(pair_file) if pair_file.exists() else None,
            folder=layout.analysis(name), seed=record_seed(name, prov), init=prov.get("init", ""),
            layer_map=prov.get("layer_map", {}) if prov.get("init") != "random" else {},
            heads_kept=prov.get("heads_kept", {}), importance=_importance_summary(prov.get("importance")),
            birth_round=(prov["round"], prov["rounds"]) if "round" in prov else None))
    if not records:
        raise KdmechError(f"{str(root)!r} holds no analysed students (analysis/<name>/step_<N>.json)")
    return sorted(records, key=lambda r: r.param_ratio)
