"""Matching teacher and student components (docs/method.md §7).

Heads: the mean attention pattern over the prompt batch, [query × key]; similarity is the
mean over query positions of the row-wise cosine between two heads' mean patterns.

MLPs: outputs over all prompts and positions X ∈ [N·T, d]. Methods (`mlp_similarity`):

- ``svd3`` (equal widths): the top-3 eigenvectors U (3 × d, orthonormal rows) of the uncentred
  covariance XᵀX/n; similarity = mean cosine of the principal angles between the two 3-dim
  subspaces = mean singular value of U_s·U_tᵀ. 1 for the same subspace in any basis (a layer
  against itself), 0 for orthogonal subspaces.
- ``cka`` (any widths): linear CKA between the two activation matrices; 1 for a layer against
  itself.
- ``auto``: svd3 at equal width, cka otherwise — for a single pair only. Several students of
  one run or sweep are matched with one method: resolve ``auto`` once for the whole set with
  `resolve_mlp_method`.
- ``authors`` (equal widths): the score of the authors' notebooks, which also needs the head
  similarity matrix; see `authors_mlp_similarity`. Not on the 0–1 scale of the others (a layer
  against itself does not score 1); offered so numbers can sit beside the paper's table.

Every method but ``authors`` scores a model against itself 1 for every node, so A = 1.
Assignment: each student node to its most similar teacher node of the same type (greedy,
many-to-one, the paper's), or the reverse, or one-to-one Hungarian.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

from kdmech.analysis.nodes import Node
from kdmech.analysis.vocabulary import Direction, MlpSimilarity, choices
from kdmech.errors import KdmechError

MLP_METHODS = choices(MlpSimilarity)
EQUAL_WIDTH_METHODS = ("svd3", "authors")
"""Methods that compare directions in the residual space, so need equal widths."""


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


def top_directions(x: torch.Tensor, k: int = 3, signs: str = "pinned") -> torch.Tensor:
    """Top-k eigenvectors [k, d] (float64, orthonormal rows, by decreasing eigenvalue) of the
    uncentred covariance xᵀx/n. An eigenvector's sign is arbitrary; with `signs` "pinned" each
    is flipped so that its largest-magnitude entry is positive, which makes sign-sensitive
    scores (``authors``) reproducible; "lapack" takes them as the authors' notebooks get them
    (`lapack_directions`). Principal angles (``svd3``) do not depend on signs or on the basis."""
    if signs == "lapack":
        return lapack_directions(x, k)
    cov = (x.T.double() @ x.double()) / x.shape[0]
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    dirs = vecs[:, -k:].flip(-1).T
    pivot = dirs.gather(1, dirs.abs().argmax(1, keepdim=True))
    return dirs * torch.where(pivot < 0, -1.0, 1.0).to(dirs)


def lapack_directions(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Top-k eigenvectors [k, d] as the authors' notebooks compute them: `scipy.linalg.svd` of
    the float32 covariance `np.dot(Xᵀ, X) / n`, the first k left singular vectors with the
    signs LAPACK gives them (float64 rows of those float32 vectors)."""
    a = x.detach().float().cpu().numpy()
    cov = np.dot(a.T, a) / a.shape[0]
    u, _, _ = scipy.linalg.svd(cov)
    return torch.from_numpy(np.ascontiguousarray(u[:, :k].T)).double()


def centred(x: torch.Tensor) -> torch.Tensor:
    """`x` minus its mean over the last dimension (d_model): the MLP output of a model whose
    writing weights are centred (TransformerLens' `center_writing_weights`)."""
    return x - x.mean(-1, keepdim=True)


def svd3_similarity(student_dirs: torch.Tensor, teacher_dirs: torch.Tensor) -> float:
    """Mean cosine of the principal angles between the row spaces of two [k, d] matrices with
    orthonormal rows: the mean singular value of U_s·U_tᵀ (clamped to 1 against rounding)."""
    cosines = torch.linalg.svdvals(student_dirs.double() @ teacher_dirs.double().T)
    return cosines.clamp(0.0, 1.0).mean().item()


def mean_cosine(student_dirs: torch.Tensor, teacher_dirs: torch.Tensor) -> float:
    """|mean of the k×k cosines| between two sets of unit directions (the authors' raw score).
    Depends on the eigenvectors' signs and basis: a layer against itself scores 1/k."""
    return abs((student_dirs.double() @ teacher_dirs.double().T).mean().item())


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between [n, d1] and [n, d2] on the same samples."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).norm() ** 2
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return (num / den).item() if den > 0 else 0.0


def authors_rescale(raw: torch.Tensor, head_sim: torch.Tensor) -> torch.Tensor:
    """Put raw MLP scores on the heads' scale the way the authors' notebooks do.

    With P the strictly positive raw scores (zeros are left out of the statistics and stay 0):
    each value in P is z-scored with P's mean and population standard deviation (ddof 0), then
    given the head similarities' mean and sample standard deviation (ddof 1, over every
    student-head × teacher-head pair): v' = (v − mean P)/std P · std H + mean H. Every value is
    then divided by the largest v' (all are 0 if that is 0). So the best MLP pair scores
    exactly 1 and the others sit below it with the heads' spread; values may be negative.
    Where P has no spread (one MLP pair, or all equal) the z-score is taken as 0 (the authors'
    code would divide by zero).
    """
    raw = raw.double()
    heads = head_sim.double().flatten()
    out = torch.zeros_like(raw)
    positive = raw > 0
    if positive.any():
        p = raw[positive]
        spread = p.std(unbiased=False)
        z = (p - p.mean()) / spread if spread > 0 else torch.zeros_like(p)
        h_std = heads.std(unbiased=True) if heads.numel() > 1 else heads.new_zeros(())
        out[positive] = z * h_std + heads.mean()
    top = out.max()
    return (out / top if top != 0 else torch.zeros_like(out)).float()


def authors_mlp_similarity(student_out: torch.Tensor, teacher_out: torch.Tensor,
                           head_sim: torch.Tensor, signs: str = "pinned", centre: bool = False,
                           rescale: bool = True, directions: tuple | None = None) -> torch.Tensor:
    """[Ls, Lt] MLP similarity of the authors' notebooks (docs/method.md §12), re-implemented.

    Source: Reih02/distilled_circuits, alignment_metric_expms/task_comparisons/
    qa_alignment_metric.ipynb cells 29–32 (the same code in seq_alignment_metric.ipynb cells
    50–56 and IOI_alignment_metric.ipynb cells 28–30; the IOI notebook computes the rescaled
    scores but then matches and scores A with the raw ones).

    1. Raw score of each (student layer, teacher layer): the top-3 eigenvectors of each
       layer's uncentred covariance XᵀX/n (X = MLP outputs over all prompts and positions),
       the 3×3 matrix of cosines between the two sets, r = |mean of its 9 entries|
       (`mean_cosine`; the mean is over signed cosines, so it depends on the eigenvectors'
       arbitrary signs — here pinned by `top_directions`).
    2. `authors_rescale(r, head_sim)`: z-scored against the head similarities and divided by
       the maximum, so the best MLP pair scores 1 (with `rescale` False: r itself, as their
       IOI notebook matches and scores).

    `signs` and `centre`: `authors_directions`; `directions`: those already computed.
    """
    sd, td = directions or authors_directions(student_out, teacher_out, signs, centre)
    raw = torch.tensor([[mean_cosine(a, b) for b in td] for a in sd], dtype=torch.float64,
                       device=head_sim.device)
    return authors_rescale(raw, head_sim) if rescale else raw.float()


def authors_directions(student_out: torch.Tensor, teacher_out: torch.Tensor, signs: str = "pinned",
                       centre: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's top-3 covariance eigenvectors for the authors' score (`top_directions`
    with `signs`), from MLP outputs centred over d_model first when `centre`."""
    _check_equal_widths("authors", student_out, teacher_out)
    prep = centred if centre else (lambda x: x)
    return ([top_directions(prep(x), signs=signs) for x in student_out],
            [top_directions(prep(x), signs=signs) for x in teacher_out])


def _check_equal_widths(method: str, student_out: torch.Tensor, teacher_out: torch.Tensor) -> None:
    if student_out.shape[-1] != teacher_out.shape[-1]:
        raise KdmechError(f"MLP similarity {method!r} needs equal widths, got student "
                          f"{student_out.shape[-1]} and teacher {teacher_out.shape[-1]}; use cka")


def resolve_mlp_method(method: str, widths: Iterable[float] | None) -> str:
    """The one MLP method for every student of a run or sweep (never mix methods inside a
    capacity comparison).

    `widths`: each student's width ratio to the teacher (CapacitySpec.width; 1 = the teacher's
    width), or None when the set is not known in advance (a sweep sampling widths from a
    distribution). ``auto`` becomes ``cka`` if any width differs from 1 (or the set is
    unknown), else ``svd3``. Other methods are returned unchanged, after checking that the
    equal-width ones (svd3, authors) are not asked of narrower students.
    """
    if method not in MLP_METHODS:
        raise KdmechError(f"MLP similarity {method!r} is unknown; accepted: {', '.join(MLP_METHODS)}")
    widths = None if widths is None else [float(w) for w in widths]
    all_equal = widths is not None and all(w == 1.0 for w in widths)
    if method == "auto":
        return "svd3" if all_equal else "cka"
    if method in EQUAL_WIDTH_METHODS and not all_equal:
        shown = "sampled from a distribution" if widths is None else sorted(set(widths))
        raise KdmechError(f"MLP similarity {method!r} needs students as wide as the teacher, but "
                          f"the width ratios are {shown}; use cka (or auto)")
    return method


def mlp_similarity(student_out: torch.Tensor, teacher_out: torch.Tensor,
                   method: MlpSimilarity = "auto",
                   head_sim: torch.Tensor | None = None, **authors) -> tuple[torch.Tensor, str]:
    """[Ls, Lt] similarity from MLP outputs [L, N·T, d] and the method actually used.

    `head_sim` ([Hs_total, Ht_total], `head_similarity`) is read only by ``authors``, which
    scales the MLP scores against the head similarities; the other methods ignore it.
    `authors`: `signs`, `centre`, `rescale` of `authors_mlp_similarity` (``authors`` only).
    """
    if method not in MLP_METHODS:
        raise KdmechError(f"MLP similarity {method!r} is unknown; accepted: {', '.join(MLP_METHODS)}")
    if method in EQUAL_WIDTH_METHODS:
        _check_equal_widths(method, student_out, teacher_out)
    equal = student_out.shape[-1] == teacher_out.shape[-1]
    used = ("svd3" if equal else "cka") if method == "auto" else method
    if used == "authors":
        if head_sim is None:
            raise KdmechError("MLP similarity 'authors' scales MLP scores against the head "
                              "similarities: pass head_sim")
        return authors_mlp_similarity(student_out, teacher_out, head_sim, **authors), used
    sim = torch.zeros(student_out.shape[0], teacher_out.shape[0], device=student_out.device)
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
        rows, cols = linear_sum_assignment(-sim.cpu().numpy())
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

