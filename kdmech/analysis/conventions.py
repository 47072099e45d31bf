"""How A is computed, switch by switch (docs/method.md §8, §12): kdmech's definitions, or the
conventions of the authors' notebook for the task.

Each field of `AlignmentConventions` is one named, documented switch. The kdmech preset sets
every switch to kdmech's definition (`KDMECH`). The authors preset takes them from the
notebook of `Reih02/distilled_circuits` (alignment_metric_expms/task_comparisons/) that
computes A for the task:

- numerals (every numeral task): ``seq_alignment_metric.ipynb``, the source of the paper's
  0.895 — mean ablation (seqcont_circuits' ``ablate_head_from_full`` / ``ablate_MLP_from_full``:
  per-position means over the corrupted prompts), the influence rounded to 2 decimals, the
  rescaled MLP score, and every head pair below the head-similarity cut 0.95 counted twice
  (their "unmatched" list is added to the list of every pair);
- IOI: ``IOI_alignment_metric.ipynb`` — zero ablation of ``hook_z`` / ``hook_mlp_out`` (on a
  weight-processed TransformerLens model, whose head value biases sit in b_O, so a zeroed head
  keeps its value bias), the teacher's MLP retained clamped at 0 (``max(0, retained)``, the
  student's not), rounding, and the *raw* MLP scores for matching and A;
- any other task (greater-than, which they have no notebook for): ``qa_alignment_metric.ipynb``
  — zero ablation with the value bias kept, both models' MLP retained clamped at 0, rounding,
  the rescaled MLP score.

Every authors notebook computes MLP outputs on models processed with
``center_writing_weights`` (so ``hook_mlp_out`` is centred over d_model) and takes
eigenvector signs as LAPACK returns them (``scipy.linalg.svd`` of the float32 covariance).
Their prompt sampling is a separate option (`AnalysisOptions.authors_sampling`,
`kdmech.analysis.sampling`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from kdmech.analysis.influence import Influence

MlpClamp = Literal["none", "teacher", "both"]
EigenvectorSigns = Literal["pinned", "lapack"]
MlpScore = Literal["rescaled", "raw"]


@dataclass(frozen=True)
class AlignmentConventions:
    """The switches of A's computation; `KDMECH` is every one of kdmech's definitions."""

    source: str = "kdmech"
    """Whose definitions: kdmech, or the authors' notebook the switches come from."""
    ablation: str | None = None
    """Ablation kind of the influence that feeds A; None: the analyses' own (`ablation`)."""
    value_bias_kept: bool = False
    """Zero ablation leaves a head's value bias (b_V, which every position's output carries):
    the head's `hook_z` becomes b_V instead of 0, as zeroing `hook_z` does on a TransformerLens
    model whose b_V is folded into b_O. Mean and resample ablation are unaffected."""
    round_influence: int | None = None
    """Decimals the influence is rounded to, `|round(100 − retained, k)|`; None: not rounded."""
    mlp_clamp: MlpClamp = "none"
    """`max(0, retained)` before an MLP's influence is taken: for no model, the teacher only
    (their IOI notebook) or both (their QA notebook)."""
    centre_mlp_out: bool = False
    """MLP outputs centred over d_model before the MLP score (their weight-processed models'
    `hook_mlp_out`)."""
    eigenvector_signs: EigenvectorSigns = "pinned"
    """Signs of the covariance eigenvectors the authors' MLP score reads: pinned (largest
    entry positive) or as LAPACK returns them (`scipy.linalg.svd` of the float32 XᵀX/n)."""
    mlp_score: MlpScore = "rescaled"
    """The authors' MLP score as matching and A use it: rescaled against the heads, or raw."""
    double_count_below: float | None = None
    """Head pairs whose similarity is below this count twice in A; None: every pair once."""

    def to_json(self) -> dict:
        return asdict(self)


KDMECH = AlignmentConventions()

_AUTHORS_COMMON = dict(round_influence=2, centre_mlp_out=True, eigenvector_signs="lapack")
AUTHORS_NUMERALS = AlignmentConventions(
    source="seq_alignment_metric.ipynb", ablation="mean", double_count_below=0.95, **_AUTHORS_COMMON)
AUTHORS_IOI = AlignmentConventions(
    source="IOI_alignment_metric.ipynb", ablation="zero", value_bias_kept=True, mlp_clamp="teacher",
    mlp_score="raw", **_AUTHORS_COMMON)
AUTHORS_OTHER = AlignmentConventions(
    source="qa_alignment_metric.ipynb", ablation="zero", value_bias_kept=True, mlp_clamp="both",
    **_AUTHORS_COMMON)


def authors_conventions(task: str) -> AlignmentConventions:
    """The conventions of the authors' notebook for `task` (see the module docstring)."""
    if task.startswith("numerals"):
        return AUTHORS_NUMERALS
    if task == "ioi" or task.startswith("ioi-"):  # ioi-wang: the task under its template set
        return AUTHORS_IOI
    return AUTHORS_OTHER


def without(conventions: AlignmentConventions, switch: str) -> AlignmentConventions:
    """`conventions` with one switch set back to kdmech's definition (to measure its effect)."""
    return replace(conventions, **{switch: getattr(KDMECH, switch)})


SWITCHES = ("ablation", "value_bias_kept", "round_influence", "mlp_clamp", "centre_mlp_out",
            "eigenvector_signs", "mlp_score", "double_count_below")
"""The switches, in the order the docs list them."""


def alignment_influence(influence: Influence, conventions: AlignmentConventions,
                        side: Literal["teacher", "student"]) -> dict[str, float]:
    """The influence A reads, per node: |100 − retained| with the clamp and the rounding of
    `conventions` (kdmech: the influence as it is)."""
    clamp = conventions.mlp_clamp == "both" or conventions.mlp_clamp == side
    out = {}
    for name, retained in influence.retained.items():
        if clamp and name.endswith(".MLP"):
            retained = max(0.0, retained)
        value = 100.0 - retained
        if conventions.round_influence is not None:
            value = round(value, conventions.round_influence)
        out[name] = abs(value)
    return out
