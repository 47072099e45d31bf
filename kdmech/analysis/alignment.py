"""The influence-weighted alignment metric (docs/method.md §8).

A = (1/|M|)·Σ_{i∈M} S_i·(1 − |Î^S_i − Î^T_i|) over matched pairs M, with S_i the pair's
similarity and Î the normalised influence of each side. Each pair counts once. With "sum"
normalization (the authors' choice, the default) Î = I / Σ_{pairs} I on each side; with "max"
it is min–max scaled to [0, 1]. Pooled A covers heads and MLPs; heads-only and MLP-only
renormalise within their own pairs.

Under the authors' numeral conventions a head pair whose similarity is below a cut counts
twice (`double_count_below`; their notebook adds its list of "unmatched" pairs to the list of
every pair): `scored_pairs` expands the matching into the list A is taken over, and every
normalization and mean runs over that list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kdmech.analysis.matching import Match
from kdmech.analysis.vocabulary import Normalization
from kdmech.errors import KdmechError


@dataclass(frozen=True)
class Alignment:
    A: float
    """Pooled over head and MLP pairs."""
    A_heads: float
    A_mlp: float
    normalization: str
    n_pairs: int
    mean_similarity: float

    def to_json(self) -> dict:
        return asdict(self)


def normalise(values: np.ndarray, how: Normalization) -> np.ndarray:
    if how == "sum":
        total = values.sum()
        return values / total if total > 0 else np.zeros_like(values)
    if how == "max":
        span = values.max() - values.min()
        return (values - values.min()) / span if span > 0 else np.zeros_like(values)
    raise KdmechError(f"normalization {how!r} is unknown; accepted: sum, max")


def alignment_score(matches: list[Match], student_influence: dict[str, float],
                    teacher_influence: dict[str, float], how: Normalization = "sum") -> float:
    if not matches:
        return float("nan")
    sim = np.array([m.similarity for m in matches])
    i_s = normalise(np.array([student_influence[m.student] for m in matches]), how)
    i_t = normalise(np.array([teacher_influence[m.teacher] for m in matches]), how)
    return float(np.mean(sim * (1 - np.abs(i_s - i_t))))


def scored_pairs(matches: list[Match], double_count_below: float | None = None) -> list[Match]:
    """The pairs A is taken over: every match once, and a second time for a head pair whose
    similarity is below `double_count_below` (None: every pair once)."""
    if double_count_below is None:
        return list(matches)
    twice = [m for m in matches if ".H" in m.student and m.similarity < double_count_below]
    return [*twice, *matches]


def pair_counts(matches: list[Match], double_count_below: float | None = None) -> list[dict]:
    """Each match with how often A counts it (the JSON form of `scored_pairs`)."""
    return [{**m.to_json(), "count": 2 if (double_count_below is not None and ".H" in m.student
                                           and m.similarity < double_count_below) else 1}
            for m in matches]


def alignment(matches: list[Match], student_influence: dict[str, float],
              teacher_influence: dict[str, float], how: Normalization = "sum",
              double_count_below: float | None = None) -> Alignment:
    """A over `matches` (each head pair below `double_count_below` counted twice)."""
    matches = scored_pairs(matches, double_count_below)
    heads = [m for m in matches if ".H" in m.student]
    mlps = [m for m in matches if m.student.endswith(".MLP")]
    return Alignment(
        A=alignment_score(matches, student_influence, teacher_influence, how),
        A_heads=alignment_score(heads, student_influence, teacher_influence, how),
        A_mlp=alignment_score(mlps, student_influence, teacher_influence, how),
        normalization=how, n_pairs=len(matches),
        mean_similarity=float(np.mean([m.similarity for m in matches])) if matches else float("nan"),
    )


def alignment_ci(matches: list[Match], student_lds: tuple, teacher_lds: tuple,
                 how: Normalization = "sum", n_boot: int = 1000, seed: int = 0,
                 influence_of=None, double_count_below: float | None = None) -> dict:
    """95% bootstrap CI of A (pooled, heads, MLPs) over prompts: the prompts are resampled and
    both models' influences recomputed from their per-prompt LDs; the matching (which depends
    on whole-batch patterns and activation covariances) is held fixed. `influence_of(inf,
    side)`: the influence A reads from an `Influence` (default: its own; a preset's clamp and
    rounding otherwise)."""
    from kdmech.analysis.influence import influence_from_lds

    # a thousand small resamples: cheaper on the CPU than as GPU kernels (numbers unchanged)
    student_lds, teacher_lds = _on_cpu(student_lds), _on_cpu(teacher_lds)
    n = student_lds[2].shape[0]
    if student_lds[2].shape[0] != teacher_lds[2].shape[0]:
        raise KdmechError("the bootstrap resamples prompts: both models' LDs must be over the same prompts")
    influence_of = influence_of or (lambda inf, side: inf.influence)
    rng = np.random.default_rng(seed)
    matches = scored_pairs(matches, double_count_below)
    heads = [m for m in matches if ".H" in m.student]
    mlps = [m for m in matches if m.student.endswith(".MLP")]
    draws = {"A": [], "A_heads": [], "A_mlp": []}
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        s = influence_of(influence_from_lds(*student_lds, rows=rows), "student")
        t = influence_of(influence_from_lds(*teacher_lds, rows=rows), "teacher")
        draws["A"].append(alignment_score(matches, s, t, how))
        draws["A_heads"].append(alignment_score(heads, s, t, how))
        draws["A_mlp"].append(alignment_score(mlps, s, t, how))
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
            for k, v in draws.items()} | {"n_boot": n_boot, "seed": seed, "matching": "held fixed"}


def _on_cpu(lds: tuple) -> tuple:
    """Per-prompt LDs (kind, names, intact [N], ablated [n_nodes, N]) with the tensors on the CPU."""
    kind, names, full, ablated = lds
    return kind, names, full.cpu(), ablated.cpu()
