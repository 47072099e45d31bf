"""Matching teacher and student components (SPEC §7).

Heads: the mean attention pattern over the prompt batch, [query × key]; similarity is the
mean over query positions of the row-wise cosine between two heads' mean patterns.
MLPs: outputs over all prompts and positions X ∈ [N·T, d]. At equal width, the top-3
eigenvectors of the uncentred covariance XᵀX/n (= the top-3 right singular vectors of X),
similarity = mean |cos| over the 3×3 matrix of cosines between the two sets (so a layer
against itself scores 1/3: the eigenvectors are orthonormal). Across widths, and on request,
linear CKA between the two activation matrices.
Assignment: each student node to its most similar teacher node of the same type (greedy,
many-to-one, the paper's), or the reverse, or one-to-one Hungarian.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from scipy.optimize import linear_sum_assignment

from kdmech.analysis.nodes import Node
from kdmech.errors import KdmechError

MlpSimilarity = Literal["auto", "svd3", "cka"]
Direction = Literal["student_to_teacher", "teacher_to_student", "hungarian"]


@dataclass(frozen=True)
class Match:
    student: str
    teacher: str
    similarity: float

    def to_json(self) -> dict:
        return asdict(self)


def head_similarity(student_patterns: torch.Tensor, teacher_patterns: torch.Tensor) -> torch.Tensor:
    """[Hs_total, Ht_total] from mean patterns [L, H, T, T] of each model."""
    s = student_patterns.flatten(0, 1)  # [Ns, T, T]
    t = teacher_patterns.flatten(0, 1)
    s = s / s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("aqk,bqk->abq", s, t).mean(-1)


def top_directions(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Top-k eigenvectors [k, d] of the uncentred covariance xᵀx/n."""
    cov = (x.T.double() @ x.double()) / x.shape[0]
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, -k:].flip(-1).T.float()


def svd3_similarity(student_dirs: torch.Tensor, teacher_dirs: torch.Tensor) -> float:
    return (student_dirs @ teacher_dirs.T).abs().mean().item()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between [n, d1] and [n, d2] on the same samples."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).norm() ** 2
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return (num / den).item() if den > 0 else 0.0


def mlp_similarity(student_out: torch.Tensor, teacher_out: torch.Tensor,
                   method: MlpSimilarity = "auto") -> tuple[torch.Tensor, str]:
    """[Ls, Lt] similarity from MLP outputs [L, N·T, d] and the method actually used."""
    if method not in ("auto", "svd3", "cka"):
        raise KdmechError(f"MLP similarity {method!r} is unknown; accepted: auto, svd3, cka")
    equal = student_out.shape[-1] == teacher_out.shape[-1]
    if method == "svd3" and not equal:
        raise KdmechError(f"MLP similarity 'svd3' needs equal widths, got student "
                          f"{student_out.shape[-1]} and teacher {teacher_out.shape[-1]}; use cka")
    used = "svd3" if (method == "svd3" or (method == "auto" and equal)) else "cka"
    sim = torch.zeros(student_out.shape[0], teacher_out.shape[0])
    if used == "svd3":
        sd = [top_directions(x) for x in student_out]
        td = [top_directions(x) for x in teacher_out]
        for i, a in enumerate(sd):
            for j, b in enumerate(td):
                sim[i, j] = svd3_similarity(a, b)
    else:
        for i, a in enumerate(student_out):
            for j, b in enumerate(teacher_out):
                sim[i, j] = linear_cka(a, b)
    return sim, used


def assign(sim: torch.Tensor, student: list[Node], teacher: list[Node],
           direction: Direction = "student_to_teacher") -> list[Match]:
    """Pairs from a [len(student), len(teacher)] similarity matrix."""
    if direction == "student_to_teacher":
        pairs = [(i, int(sim[i].argmax())) for i in range(len(student))]
    elif direction == "teacher_to_student":
        pairs = [(int(sim[:, j].argmax()), j) for j in range(len(teacher))]
    elif direction == "hungarian":
        rows, cols = linear_sum_assignment(-sim.numpy())
        pairs = list(zip(rows.tolist(), cols.tolist()))
    else:
        raise KdmechError(f"matching direction {direction!r} is unknown; accepted: "
                          f"student_to_teacher, teacher_to_student, hungarian")
    return [Match(student[i].name, teacher[j].name, float(sim[i, j])) for i, j in pairs]


def merges(matches: list[Match]) -> dict[str, list[str]]:
    """Teacher nodes matched by more than one student node (and the reverse, keyed 'S:…')."""
    by_teacher, by_student = {}, {}
    for m in matches:
        by_teacher.setdefault(m.teacher, []).append(m.student)
        by_student.setdefault(m.student, []).append(m.teacher)
    out = {t: s for t, s in by_teacher.items() if len(s) > 1}
    out.update({f"S:{s}": t for s, t in by_student.items() if len(t) > 1})
    return out

