"""One teacher–student comparison at one checkpoint: the record behind
`analysis/<student>/step_<N>.json` (keys are part of kdmech's output contract)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


import numpy as np
import torch

from kdmech.analysis.alignment import Alignment, alignment, pair_counts, scored_pairs
from kdmech.analysis.conventions import KDMECH, AlignmentConventions, alignment_influence
from kdmech.analysis.influence import Influence
from kdmech.analysis.vocabulary import Direction, MlpSimilarity, Normalization
from kdmech.analysis.matching import (Match, assign, authors_directions, head_similarity,
                                      merges, mlp_similarity, top_directions, centred)
from kdmech.analysis.profile import ModelProfile
from kdmech.analysis.sign_range import sign_range


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
    alignment_inputs: dict = field(default_factory=dict)
    """What A was computed from, enough to recompute it with numpy (docs/method.md §8): the
    influence A read per node ({"teacher"|"student": {node: I}}), the matched pairs with their
    similarity and how often A counts each, the normalization and the conventions."""
    sign_range: dict | None = None
    """Under the authors' MLP score: A over the eigenvector sign choices (`sign_range`)."""

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
                "teacher_weak": self.teacher_weak, "teacher_competence": self.teacher_competence,
                "alignment_inputs": self.alignment_inputs, "sign_range": self.sign_range}

    @classmethod
    def from_json(cls, d: dict) -> "PairAnalysis":
        alignment = dict(d["alignment"])
        if "normalisation" in alignment:  # records written before the option's US spelling
            alignment["normalization"] = alignment.pop("normalisation")
        return cls(d["step"], d["task"], d["ablation"], d["logit_diff"], d["influence"],
                   [Match(**m) for m in d["matching"]], Alignment(**alignment),
                   WorstDrop.from_json(d["worst_drop"]), d.get("options", {}), d.get("merges", {}),
                   d.get("similarity", {}),
                   d.get("teacher_competence", {}), d.get("alignment_inputs", {}), d.get("sign_range"))

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
            normalization: Normalization = "sum",
            conventions: AlignmentConventions = KDMECH) -> PairAnalysis:
    """Match the student's nodes to the teacher's and score the alignment.

    `mlp_method`: auto, svd3, cka or authors (matching.mlp_similarity; authors also reads the
    head similarity matrix). The method used is recorded in `options["mlp_similarity"]`.
    With svd3 or cka a profile compared with itself scores 1 for every node and A = 1.
    `conventions`: how A is computed (`kdmech.analysis.conventions`; kdmech's by default)."""
    if teacher.influence.ablation != student.influence.ablation:
        raise ValueError("teacher and student profiles use different ablations")
    scored = score_alignment(teacher, student, direction, mlp_method, normalization, conventions)
    worst_t, worst_s = _worst(teacher.influence), _worst(student.influence)
    ratio = worst_s.value / worst_t.value if worst_t.value > 0 else float("inf")
    return PairAnalysis(
        step=step, task=task, ablation=student.influence.ablation,
        logit_diff={"teacher": teacher.metric, "student": student.metric},
        influence={"teacher": teacher.influence.influence, "student": student.influence.influence},
        matching=scored.matches, alignment=scored.alignment,
        worst_drop=WorstDrop(worst_t, worst_s, ratio),
        options={"matching_direction": direction, "mlp_similarity": scored.mlp_used,
                 "head_similarity": "pattern_row_cosine", "normalization": normalization},
        merges=merges(scored.matches), similarity=scored.similarity,
        alignment_inputs=scored.inputs, sign_range=scored.sign_range)


@dataclass(frozen=True)
class ScoredAlignment:
    """The matching of two profiles and the A it gives, with what A was computed from."""
    matches: list[Match]
    mlp_used: str
    similarity: dict
    alignment: Alignment
    inputs: dict
    sign_range: dict | None


def score_alignment(teacher: ModelProfile, student: ModelProfile, direction: Direction = "student_to_teacher",
                    mlp_method: MlpSimilarity = "auto", normalization: Normalization = "sum",
                    conventions: AlignmentConventions = KDMECH) -> ScoredAlignment:
    """Heads matched by their mean patterns, MLPs by `mlp_method`, and A over the matched
    pairs from each profile's influence, all under `conventions`."""
    s_heads = [n for n in student.nodes if n.is_head]
    t_heads = [n for n in teacher.nodes if n.is_head]
    s_mlps = [n for n in student.nodes if not n.is_head]
    t_mlps = [n for n in teacher.nodes if not n.is_head]
    head_sim = head_similarity(student.patterns, teacher.patterns)
    authors, directions = {}, None
    if mlp_method == "authors":
        directions = authors_directions(student.mlp_out, teacher.mlp_out, conventions.eigenvector_signs,
                                        conventions.centre_mlp_out)
        authors = {"directions": directions, "rescale": conventions.mlp_score == "rescaled"}
    mlp_sim, mlp_used = mlp_similarity(student.mlp_out, teacher.mlp_out, mlp_method, head_sim, **authors)
    matches = assign(head_sim, s_heads, t_heads, direction) + assign(mlp_sim, s_mlps, t_mlps, direction)
    s_inf = alignment_influence(student.influence, conventions, "student")
    t_inf = alignment_influence(teacher.influence, conventions, "teacher")
    cut = conventions.double_count_below
    similarity = {
        "heads": {"student": [n.name for n in s_heads], "teacher": [n.name for n in t_heads],
                  "matrix": head_sim.tolist()},
        "mlps": {"student": [n.name for n in s_mlps], "teacher": [n.name for n in t_mlps],
                 "matrix": mlp_sim.tolist()},
    }
    inputs = {"influence": {"teacher": t_inf, "student": s_inf}, "pairs": pair_counts(matches, cut),
              "normalization": normalization, "conventions": conventions.to_json(),
              "formula": "A = mean over pairs (each `count` times) of similarity·(1 − |Î_S − Î_T|), "
                         "Î = I / Σ I over those pairs (sum) or min–max scaled (max)"}
    signs = None
    if directions is not None:
        signs = _sign_range(directions, head_sim, matches, s_inf, t_inf, s_mlps, t_mlps, student,
                            teacher, direction, normalization, conventions)
    return ScoredAlignment(matches, mlp_used, similarity, alignment(matches, s_inf, t_inf, normalization, cut),
                           inputs, signs)


def _sign_range(directions, head_sim, matches, s_inf, t_inf, s_mlps, t_mlps, student, teacher,
                direction, normalization, conventions) -> dict:
    """`sign_range` of A for the authors' MLP score with the directions A used."""
    sd, td = directions
    cos = np.array([[(a @ b.T).cpu().numpy() for b in td] for a in sd])
    heads = [m for m in scored_pairs(matches, conventions.double_count_below) if ".H" in m.student]
    head_terms = (np.array([s_inf[m.student] for m in heads]), np.array([t_inf[m.teacher] for m in heads]),
                  np.array([m.similarity for m in heads]))
    mlp_terms = ([s_inf[n.name] for n in s_mlps], [t_inf[n.name] for n in t_mlps])
    flat = head_sim.double().flatten()
    stats = (flat.mean().item(), flat.std(unbiased=True).item() if flat.numel() > 1 else 0.0)
    pinned = None
    if conventions.eigenvector_signs != "pinned":
        prep = centred if conventions.centre_mlp_out else (lambda x: x)
        flips = lambda used, outs: [torch.sign(torch.diagonal(top_directions(prep(x)) @ u.T)).cpu().numpy()  # noqa: E731
                                    for u, x in zip(used, outs)]
        pinned = (flips(sd, student.mlp_out), flips(td, teacher.mlp_out))
    out = sign_range(cos, head_terms, mlp_terms, stats, conventions.mlp_score == "rescaled", direction,
                     normalization, pinned)
    return {**out, "signs_used": conventions.eigenvector_signs}
