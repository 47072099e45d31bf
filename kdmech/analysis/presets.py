"""Analysis presets: kdmech's conventions (default) or the paper authors' (docs/method.md §12).

A preset changes only where the authors' code differs from kdmech's default; everything else
(the analyses' own ablation kind, normalization, matching direction, circuits) stays as set.

``kdmech``: every number as docs/method.md defines it.

``authors``: the choices of the authors' public code (`Reih02/distilled_circuits`), so that
numbers can sit beside the paper's tables:

- A is fed by **zero-ablation** influence (their IOI, QA and BERT alignment notebooks ablate a
  head's `hook_z` slice or an MLP's output to zero); the other analyses keep their own
  ablation kind, and every result records which kind A used (`alignment_ablation`).
- MLP similarity is their notebook score (`mlp_similarity="authors"`, see
  `kdmech.analysis.matching`).
- Sensitivity is also reported their way (`robustness/plots/compute_robustness.py`): drops
  m = 100 − clamp(retained, 0, 100), heads and MLPs pooled, with their bootstrap
  (`sensitivity.pooled_sensitivity`).
- IOI uses Wang et al.'s 15 BABA templates and their ABBA mirrors, N = 100.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdmech.analysis.ablation import AblationKind, corrupted_activations
from kdmech.analysis.alignment import alignment
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.influence import influence_from_lds, per_prompt_lds
from kdmech.analysis.pair import PairAnalysis
from kdmech.analysis.profile import ModelProfile
from kdmech.errors import KdmechError


@dataclass(frozen=True)
class Preset:
    name: str
    alignment_ablation: str | None = None
    """Ablation kind of the influence that feeds A; None: the analyses' own."""
    mlp_similarity: str | None = None
    """MLP similarity method the preset fixes; None: the option as given."""
    sensitivity: str = "kdmech"
    """kdmech (per group, D = |100 − retained|) or authors (adds the pooled, clamped drops)."""
    ioi_templates: str = "kdmech"
    """IOI template set (kdmech.tasks.ioi)."""
    ioi_n: int | None = None
    """IOI prompts in all; None: the options' per_type."""

    def mlp_method(self, requested: str) -> str:
        """The MLP similarity to use given the option `requested` (its default is "auto")."""
        if self.mlp_similarity is None or requested == self.mlp_similarity:
            return requested
        if requested != "auto":
            raise KdmechError(f"preset {self.name!r} sets mlp_similarity to {self.mlp_similarity!r}; "
                              f"drop mlp_similarity={requested!r} or use preset 'kdmech'")
        return self.mlp_similarity

    def task_options(self, task: str, per_type: int) -> dict:
        """Keyword arguments for `kdmech.tasks.get_task(task, ...)` under this preset."""
        if task == "ioi" and self.ioi_templates != "kdmech":
            return {"per_type": self.ioi_n or per_type, "templates": self.ioi_templates}
        return {"per_type": per_type}

    def to_json(self, ablation: str) -> dict:
        """What the preset decided, for a result's options (`ablation`: the analyses' kind)."""
        return {"preset": self.name, "alignment_ablation": self.alignment_ablation or ablation,
                "sensitivity": self.sensitivity, "ioi_templates": self.ioi_templates}


PRESETS = {
    "kdmech": Preset("kdmech"),
    "authors": Preset("authors", alignment_ablation="zero", mlp_similarity="authors",
                      sensitivity="authors", ioi_templates="wang", ioi_n=100),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KdmechError(f"preset {name!r} is unknown; accepted: {list(PRESETS)}")
    return PRESETS[name]


def ablation_lds(prof: ModelProfile, kind: str) -> tuple:
    """Per-prompt LDs of every single-node ablation of `prof`'s model under another ablation
    kind (same bridged model and prompts): the tuple `influence.per_prompt_lds` returns."""
    kind = AblationKind(kind)
    if prof.engine is None:
        raise KdmechError("a profile without its ablation engine cannot be re-ablated")
    bridged, prompts = prof.engine.bridged, prof.engine.prompts
    budget = prof.engine.max_batch_tokens  # the profile's memory budget holds here too
    source = (None if kind is AblationKind.ZERO else
              corrupted_activations(bridged, prompts, keep_full=kind is AblationKind.RESAMPLE,
                                    batch_size=prof.engine.batch_size))
    return per_prompt_lds(AblationEngine(bridged, prompts, kind, source, max_batch_tokens=budget))


def alignment_lds(preset: Preset, prof: ModelProfile) -> tuple | None:
    """The per-prompt LDs that feed A under `preset`, or None where they are the profile's own."""
    kind = preset.alignment_ablation
    if kind is None or kind == prof.influence.ablation:
        return None
    return ablation_lds(prof, kind)


def alignment_profile(prof: ModelProfile, lds: tuple | None) -> ModelProfile:
    """`prof` with its influence (and per-prompt LDs) replaced by those from `lds`, e.g. so the
    noise curve's A uses the same ablation as the preset's A."""
    return prof if lds is None else replace(prof, influence=influence_from_lds(*lds), lds=lds)


def realign(pair: PairAnalysis, preset: Preset, teacher_lds: tuple | None = None,
            student_lds: tuple | None = None) -> PairAnalysis:
    """`pair` with the preset recorded in its options and, where LDs are given, A recomputed
    from their influence (same matching and similarities; the other records keep the
    analyses' own ablation)."""
    kind = pair.ablation
    align = pair.alignment
    if teacher_lds is not None and student_lds is not None:
        kind = teacher_lds[0]
        if student_lds[0] != kind:
            raise ValueError("teacher and student alignment LDs use different ablations")
        align = alignment(pair.matching, influence_from_lds(*student_lds).influence,
                          influence_from_lds(*teacher_lds).influence,
                          # older runs: British spelling
                          pair.options.get("normalization", pair.options.get("normalisation", "sum")))
    options = {**pair.options, **preset.to_json(pair.ablation), "alignment_ablation": kind}
    return replace(pair, alignment=align, options=options)
