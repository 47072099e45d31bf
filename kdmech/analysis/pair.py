"""One teacher–student comparison at one checkpoint: the record behind
`analysis/<student>/step_<N>.json` (keys are part of kdmech's output contract)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


from kdmech.analysis.alignment import Alignment, alignment
from kdmech.analysis.influence import Influence
from kdmech.analysis.vocabulary import Direction, MlpSimilarity, Normalization
from kdmech.analysis.matching import (Match, assign, head_similarity,
                                      merges, mlp_similarity)
from kdmech.analysis.profile import ModelProfile


@dataclass(frozen=True)
class PairAnalysis:
    step: int
    task: str
    ablation: str
    logit_diff: dict[str, float]
    """The intact task metric of teacher and student: LD, or greater-than's probability
    difference (the key keeps the name of the common case; every saved step uses it)."""
    influence: dict[str, dict[str, float]]
    matching: list[Match]
    alignment: Alignment
    worst_drop: WorstDrop
    options: dict = field(default_factory=dict)
    merges: dict[str, list[str]] = field(default_factory=dict)
    similarity: dict = field(default_factory=dict)
    """Full similarity matrices: {"heads"|"mlps": {"student": names, "teacher": names,
    "matrix": [[...]]}} (rows student, columns teacher), for matching in any direction."""
    teacher_competence: dict = field(default_factory=dict)
    """The teacher's top-1 and surviving prompts on the task (the competence gate's record)."""

    @property
    def teacher_weak(self) -> bool:
        """The teacher failed the competence gate and was analysed anyway."""
        return bool(self.teacher_competence.get("weak", False))

    def to_json(self) -> dict:
        return {"step": self.step, "task": self.task, "ablation": self.ablation,
                "logit_diff": self.logit_diff, "influence": self.influence,
                "matching": [m.to_json() for m in self.matching],
                "alignment": self.alignment.to_json(), "worst_drop": self.worst_drop.to_json(),
                "merges": self.merges, "options": self.options, "similarity": self.similarity,
                "teacher_weak": self.teacher_weak, "teacher_competence": self.teacher_competence}

    @classmethod
    def from_json(cls, d: dict) -> "PairAnalysis":
        alignment = dict(d["alignment"])
        if "normalisation" in alignment:  # records written before the option's US spelling
            alignment["normalization"] = alignment.pop("normalisation")
        return cls(d["step"], d["task"], d["ablation"], d["logit_diff"], d["influence"],
                   [Match(**m) for m in d["matching"]], Alignment(**alignment),
                   WorstDrop.from_json(d["worst_drop"]), d.get("options", {}), d.get("merges", {}),
                   d.get("similarity", {}),
                   d.get("teacher_competence", {}))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)


@dataclass(frozen=True)
class NodeDrop:
    node: str
    value: float
    """Impact (%) of ablating `node` alone: 100 − retained%."""


@dataclass(frozen=True)
class WorstDrop:
    """The largest single-node drop of each model (docs/method.md §8) and their ratio."""

    teacher: NodeDrop
    student: NodeDrop
    ratio: float
    """Student's worst drop over the teacher's (inf when the teacher's is 0)."""

    @property
    def flag_2x(self) -> bool:
        """The student is more than twice as brittle as the teacher."""
        return bool(self.ratio > 2.0)

    def to_json(self) -> dict:
        return {"teacher": asdict(self.teacher), "student": asdict(self.student), "ratio": self.ratio,
                "flag_2x": self.flag_2x}

    @classmethod
    def from_json(cls, d: dict) -> "WorstDrop":
        return cls(NodeDrop(**d["teacher"]), NodeDrop(**d["student"]), d["ratio"])


def _worst(infl: Influence) -> NodeDrop:
    node, value = infl.worst
    return NodeDrop(node, value)


def compare(teacher: ModelProfile, student: ModelProfile, step: int, task: str,
            direction: Direction = "student_to_teacher", mlp_method: MlpSimilarity = "auto",
            normalization: Normalization = "sum") -> PairAnalysis:
    """Match the student's nodes to the teacher's and score the alignment.

    `mlp_method`: auto, svd3, cka or authors (matching.mlp_similarity; authors also reads the
    head similarity matrix). The method used is recorded in `options["mlp_similarity"]`.
    With svd3 or cka a profile compared with itself scores 1 for every node and A = 1."""
    if teacher.influence.ablation != student.influence.ablation:
        raise ValueError("teacher and student profiles use different ablations")
    s_heads = [n for n in student.nodes if n.is_head]
    t_heads = [n for n in teacher.nodes if n.is_head]
    s_mlps = [n for n in student.nodes if not n.is_head]
    t_mlps = [n for n in teacher.nodes if not n.is_head]
    head_sim = head_similarity(student.patterns, teacher.patterns)
    mlp_sim, mlp_used = mlp_similarity(student.mlp_out, teacher.mlp_out, mlp_method, head_sim)
    matches = assign(head_sim, s_heads, t_heads, direction) + assign(mlp_sim, s_mlps, t_mlps, direction)
    s_inf, t_inf = student.influence.influence, teacher.influence.influence
    worst_t, worst_s = _worst(teacher.influence), _worst(student.influence)
    ratio = worst_s.value / worst_t.value if worst_t.value > 0 else float("inf")
    return PairAnalysis(
        step=step, task=task, ablation=student.influence.ablation,
        logit_diff={"teacher": teacher.metric, "student": student.metric},
        influence={"teacher": t_inf, "student": s_inf},
        matching=matches, alignment=alignment(matches, s_inf, t_inf, normalization),
        worst_drop=WorstDrop(worst_t, worst_s, ratio),
        options={"matching_direction": direction, "mlp_similarity": mlp_used,
                 "head_similarity": "pattern_row_cosine", "normalization": normalization},
        merges=merges(matches),
        similarity={
            "heads": {"student": [n.name for n in s_heads], "teacher": [n.name for n in t_heads],
                      "matrix": head_sim.tolist()},
            "mlps": {"student": [n.name for n in s_mlps], "teacher": [n.name for n in t_mlps],
                     "matrix": mlp_sim.tolist()},
        },
    )


