"""Analysis presets: kdmech's conventions (default) or the paper authors' (docs/method.md §12).

A preset changes only where the authors' code differs from kdmech's default; everything else
(the analyses' own ablation kind, normalization, matching direction, circuits) stays as set.

``kdmech``: every number as docs/method.md defines it.

``authors``: the choices of the authors' public code (`Reih02/distilled_circuits`), so that
numbers can sit beside the paper's tables:

- A follows the conventions of the authors' notebook for the task
  (`kdmech.analysis.conventions`: numerals mean ablation and double-counted heads, IOI zero
  ablation with the value bias kept and raw MLP scores, their clamp, rounding, centred MLP
  outputs and LAPACK eigenvector signs); the other analyses keep their own ablation kind, and
  every result records the conventions A used (`alignment_inputs.conventions`). With
  `authors_sampling` A is also computed on their prompt samples (`kdmech.analysis.sampling`).
- MLP similarity is their notebook score (`mlp_similarity="authors"`, see
  `kdmech.analysis.matching`), reported with its range over eigenvector signs
  (`kdmech.analysis.sign_range`).
- Sensitivity is also reported their way (`robustness/plots/compute_robustness.py`): drops
  m = 100 − clamp(retained, 0, 100), heads and MLPs pooled, with their bootstrap
  (`sensitivity.pooled_sensitivity`).
- IOI uses Wang et al.'s 15 BABA templates and their ABBA mirrors, N = 100.
- Path patching takes a sender's corrupted activation from the corrupted run with the nodes
  outside the circuit ablated, as their edge pruning does (`sender_source`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from kdmech.analysis.ablation import AblationKind, corrupted_activations
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.ablation.value_bias import value_biases
from kdmech.analysis.conventions import KDMECH, AlignmentConventions, authors_conventions
from kdmech.analysis.influence import influence_from_lds, per_prompt_lds
from kdmech.analysis.matching import merges
from kdmech.analysis.pair import PairAnalysis, score_alignment
from kdmech.analysis.profile import ModelProfile, clean_run
from kdmech.analysis.sampling import authors_samples, without_bos
from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptSet


@dataclass(frozen=True)
class Preset:
    name: str
    mlp_similarity: str | None = None
    """MLP similarity method the preset fixes; None: the option as given."""
    sensitivity: str = "kdmech"
    """kdmech (per group, D = |100 − retained|) or authors (adds the pooled, clamped drops)."""
    ioi_templates: str = "kdmech"
    """IOI template set (kdmech.tasks.ioi)."""
    ioi_n: int | None = None
    """IOI prompts in all; None: the options' per_type."""
    sender_source: str = "intact"
    """Where path patching takes a sender's corrupted activation (`circuit.path_patching`)."""

    def conventions(self, task: str) -> AlignmentConventions:
        """How A is computed on `task` (`kdmech.analysis.conventions`)."""
        return authors_conventions(task) if self.name == "authors" else KDMECH

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

    def to_json(self, ablation: str, task: str = "", sampling: bool = False) -> dict:
        """What the preset decided, for a result's options (`ablation`: the analyses' kind)."""
        conventions = self.conventions(task)
        return {"preset": self.name, "alignment_ablation": conventions.ablation or ablation,
                "sensitivity": self.sensitivity, "ioi_templates": self.ioi_templates,
                "authors_sampling": sampling, "alignment_conventions": conventions.source}


PRESETS = {
    "kdmech": Preset("kdmech"),
    "authors": Preset("authors", mlp_similarity="authors", sensitivity="authors", ioi_templates="wang",
                      ioi_n=100, sender_source="circuit_ablated"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KdmechError(f"preset {name!r} is unknown; accepted: {list(PRESETS)}")
    return PRESETS[name]


def ablation_lds(prof: ModelProfile, kind: str, value_bias_kept: bool = False,
                 prompts: PromptSet | None = None, means: PromptSet | None = None) -> tuple:
    """Per-prompt LDs of every single-node ablation of `prof`'s model under ablation `kind`
    (the tuple `influence.per_prompt_lds` returns), on `prompts` (default: the profile's) with
    the means over `means`' corrupted prompts (default: `prompts`'); zero ablation keeps each
    head's value bias with `value_bias_kept`."""
    kind = AblationKind(kind)
    if prof.engine is None:
        raise KdmechError("a profile without its ablation engine cannot be re-ablated")
    bridged, budget, rows = prof.engine.bridged, prof.engine.max_batch_tokens, prof.engine.batch_size
    prompts = prompts if prompts is not None else prof.engine.prompts
    source = None
    if kind is AblationKind.MEAN:
        source = corrupted_activations(bridged, means if means is not None else prompts, batch_size=rows)
    elif kind is AblationKind.RESAMPLE:
        source = corrupted_activations(bridged, prompts, keep_full=True, batch_size=rows)
    bias = value_biases(bridged.model, bridged.family.name) if value_bias_kept and kind is AblationKind.ZERO else None
    engine = AblationEngine(bridged, prompts, kind, source, max_batch_tokens=budget, value_bias=bias)
    return per_prompt_lds(engine)


@torch.no_grad()
def alignment_side(prof: ModelProfile, conventions: AlignmentConventions, sampling: bool = False,
                   bos_id: int | None = None) -> ModelProfile | None:
    """What A reads of one model under `conventions`: `prof` with its influence (and, with the
    authors' `sampling`, its patterns and MLP outputs) recomputed, or None where it is `prof`
    itself. With `sampling`, patterns and MLP outputs come from the first of the authors'
    samples, the influence from the second (without BOS, `bos_id`) with the means over the
    third (`kdmech.analysis.sampling`)."""
    kind = conventions.ablation or prof.influence.ablation
    keep_bias = conventions.value_bias_kept and kind == "zero"
    if not sampling:
        if kind == prof.influence.ablation and not keep_bias:
            return None
        lds = ablation_lds(prof, kind, keep_bias)
        return replace(prof, influence=influence_from_lds(*lds), lds=lds)
    if prof.engine is None:
        raise KdmechError("a profile without its ablation engine cannot be re-sampled")
    prompts = prof.engine.prompts
    samples = authors_samples(len(prompts))
    _, patterns, mlp_out = clean_run(prof.engine.bridged, prompts.subset(samples.patterns),
                                     batch_size=prof.engine.batch_size)
    lds = ablation_lds(prof, kind, keep_bias, without_bos(prompts.subset(samples.influence), bos_id),
                       without_bos(prompts.subset(samples.means), bos_id))
    return replace(prof, influence=influence_from_lds(*lds), lds=lds, patterns=patterns, mlp_out=mlp_out)


def realign(pair: PairAnalysis, preset: Preset, teacher: ModelProfile, student: ModelProfile,
            teacher_side: ModelProfile | None = None, student_side: ModelProfile | None = None,
            sampling: bool = False) -> PairAnalysis:
    """`pair` with the preset recorded in its options and, under the authors' conventions,
    matching, similarities and A recomputed from the alignment sides (`alignment_side`; None:
    the profile itself); influence and worst drops keep the analyses' own ablation."""
    conventions = preset.conventions(pair.task)
    t, s = teacher_side or teacher, student_side or student
    if t.influence.ablation != s.influence.ablation:
        raise ValueError("teacher and student alignment sides use different ablations")
    options = {**pair.options, **preset.to_json(pair.ablation, pair.task, sampling),
               "alignment_ablation": s.influence.ablation}
    if conventions == KDMECH and teacher_side is None and student_side is None:
        return replace(pair, options=options)
    scored = score_alignment(t, s, options["matching_direction"], options["mlp_similarity"],
                             options.get("normalization", options.get("normalisation", "sum")), conventions)
    return replace(pair, matching=scored.matches, merges=merges(scored.matches), similarity=scored.similarity,
                   alignment=scored.alignment, alignment_inputs=scored.inputs, sign_range=scored.sign_range,
                   options=options)
