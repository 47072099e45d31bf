"""The analysis options: one base (`AnalysisOptions`) for what every analysis of a pair shares,
validated once, and its two uses — `AnalysisSchedule` (checkpoint analyses during
distillation: `--analysis.*`) and `AnalyzeOptions` (the full pair analysis of `kdmech
analyze`: `--analysis.*` as well)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from kdmech.analysis.circuit import THRESHOLDS
from kdmech.analysis.noise import SIGMAS
from kdmech.analysis.presets import get_preset
from kdmech.analysis.vocabulary import (Ablation, AnalysisDtype, AttributionDtype, Direction, Discovery, MlpSimilarity,
                                       Normalization, PresetName, SenderSource, check_choice)
from kdmech.errors import KdmechError


@dataclass(frozen=True)
class AnalysisOptions:
    """How a teacher–student pair is analysed: prompts, the competence gate, the method."""

    per_type: int = 128
    """Prompts per prompt type (IOI: prompts in all)."""
    ablation: Ablation = "mean"
    """mean, zero or resample."""
    filter_prompts: bool = True
    """Keep only prompts the teacher gets right with p(correct) > 2·p(wrong)."""
    min_teacher_top1: float = 0.9
    """Competence gate: refuse to analyse a teacher whose top-1 on the task is below this."""
    min_prompts: int = 64
    """Competence gate: refuse when fewer prompts than this survive the teacher filter."""
    allow_weak_teacher: bool = False
    """Analyse a teacher that fails the gate anyway; every output is marked teacher_weak."""
    matching_direction: Direction = "student_to_teacher"
    """student_to_teacher (the paper's greedy many-to-one), teacher_to_student or hungarian."""
    mlp_similarity: MlpSimilarity = "auto"
    """auto (svd3 at equal width, else cka; one method for every student of a run), svd3, cka
    or authors."""
    normalization: Normalization = "sum"
    """Influence normalization inside A: sum (the authors') or max (min-max)."""
    preset: PresetName = "kdmech"
    """kdmech, or authors: the paper authors' conventions where they differ (A computed as
    their notebook for the task computes it — numerals: mean ablation, heads below similarity
    0.95 counted twice; IOI and others: zero ablation with the value bias kept, MLP clamp;
    rounding, centred MLP outputs and LAPACK eigenvector signs everywhere —, their MLP
    similarity with its range over eigenvector signs, pooled clamped sensitivity with their
    bootstrap, IOI over Wang et al.'s 15 templates and mirrors with N = 100, path patching from
    circuit-ablated corrupted senders); see kdmech.analysis.presets and
    kdmech.analysis.conventions."""
    authors_sampling: bool = False
    """Preset authors only: A on the authors' prompt samples (random.seed(42); 100 prompts for
    patterns and MLP outputs, another 100 for the influence, read without BOS, and another 100
    corrupted prompts for its means); see kdmech.analysis.sampling."""
    sender_source: SenderSource = "auto"
    """Path patching's sender activation: intact (from the intact corrupted run, kdmech's),
    circuit_ablated (from the corrupted run with the nodes outside the circuit ablated, the
    authors'), or auto (the preset's: intact under kdmech, circuit_ablated under authors)."""
    max_batch_tokens: int = 0
    """Memory budget of the analysis forwards, in tokens: 0 = no budget (today's batching);
    N > 0: no analysis forward (the competence gate, profiles, influence, circuits and edges,
    noise validation, distribution shift) takes more than max(1, N // seq_len) prompt rows, stacked copies
    counted. The same numbers, up to float rounding."""
    discovery: Discovery = "exact"
    """How circuits are found: exact (greedy exact pruning), eap or eap-ig (gradient attribution,
    its circuit verified and pruned by exact ablation), auto (eap-ig when exact would take more
    than 1,000 forwards by the estimate of docs/method.md §5.5, else exact)."""
    ig_steps: int = 5
    """Points of EAP-IG's path integral (midpoint rule)."""
    attribution_dtype: AttributionDtype = "float32"
    """float32, or bfloat16: attribution's forward-backward in bf16 (the exact checks stay as they are)."""

    def __post_init__(self):
        # The preset's MLP similarity replaces "auto" (and is recorded); a clash is an error.
        object.__setattr__(self, "mlp_similarity", get_preset(self.preset).mlp_method(self.mlp_similarity))
        check_choice("sender source", self.sender_source, SenderSource)
        if self.sender_source == "auto":  # the preset's choice, recorded
            object.__setattr__(self, "sender_source", get_preset(self.preset).sender_source)
        if self.authors_sampling and self.preset != "authors":
            raise KdmechError(f"authors_sampling is the authors' prompt sampling of the authors preset; "
                              f"set preset authors or drop authors_sampling (preset is {self.preset!r})")
        check_choice("ablation", self.ablation, Ablation)
        check_choice("matching direction", self.matching_direction, Direction)
        check_choice("MLP similarity", self.mlp_similarity, MlpSimilarity)
        check_choice("normalization", self.normalization, Normalization)
        check_choice("discovery", self.discovery, Discovery)
        check_choice("attribution dtype", self.attribution_dtype, AttributionDtype)
        if isinstance(self.ig_steps, bool) or not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise KdmechError(f"ig_steps must be an integer ≥ 1, got {self.ig_steps!r}")
        if self.per_type < 1 or self.min_prompts < 0:
            raise KdmechError(f"per_type must be ≥ 1 and min_prompts ≥ 0, got {self.per_type}, "
                              f"{self.min_prompts}")
        if isinstance(self.max_batch_tokens, bool) or not isinstance(self.max_batch_tokens, int) \
                or self.max_batch_tokens < 0:
            raise KdmechError(f"max_batch_tokens must be an integer ≥ 0 (0 = no budget), got "
                              f"{self.max_batch_tokens!r}")
        if not 0 <= self.min_teacher_top1 <= 1:
            raise KdmechError(f"min_teacher_top1 must be in [0, 1], got {self.min_teacher_top1}")

    def compare_options(self) -> dict:
        """The keyword arguments of `kdmech.analysis.compare`."""
        return {"direction": self.matching_direction, "mlp_method": self.mlp_similarity,
                "normalization": self.normalization}


@dataclass(frozen=True)
class AnalysisSchedule(AnalysisOptions):
    """What the checkpoint analysis computes and how often."""

    every_n_steps: int = 200
    """Analyse every N optimizer steps (also before training and at the end); 0 = only those."""
    circuit_every_n_steps: int = 0
    """Circuits (with edges) and probes every N steps; 0 = only at the end."""
    circuits: bool = True
    """Discover circuits at all (at the end and on `circuit_every_n_steps`)."""
    enabled: bool = True
    """Run checkpoint analyses at all (off: plain distillation, e.g. for timing)."""
    task: str = "numerals"
    """The task the circuits are read on (kdmech.tasks.TASKS)."""
    attribution_scores: bool = False
    """Record every checkpoint's node attribution scores of the student (the step record, the
    timeline's attribution_over_steps, W&B): by `discovery`'s method when it is eap or eap-ig,
    else eap-ig; `ig_steps` forward-backward passes per checkpoint (docs/method.md §5.5)."""
    background: bool = False
    """Analyse a copy of the student in a background thread while training goes on (the final
    analysis waits): the same numbers, less waiting where training leaves the device idle; the
    W&B rows of a step then arrive a few training steps late (charts use trainer/global_step)."""

    def __post_init__(self):
        super().__post_init__()
        if self.every_n_steps < 0 or self.circuit_every_n_steps < 0:
            raise KdmechError(f"every_n_steps and circuit_every_n_steps must be ≥ 0, got "
                              f"{self.every_n_steps}, {self.circuit_every_n_steps}")


@dataclass(frozen=True)
class AnalyzeOptions(AnalysisOptions):
    """Settings of the full pair analysis (`kdmech analyze`)."""

    thresholds: tuple[float, ...] = THRESHOLDS
    """Circuit thresholds T of the sweep (0.20 is always added)."""
    edges: bool = True
    """Path-patch the edges of every circuit of the sweep."""
    noise_sigmas: tuple[float, ...] = SIGMAS
    noise_seeds: int = 3
    n_boot: int = 1000
    """Bootstrap resamples for the alignment CI (the sensitivity CIs use 10,000)."""
    seed: int = 0
    dtype: AnalysisDtype = "float32"
    """The dtype both models are loaded and run in: float32, or bfloat16 for models too large
    for float32 (e.g. 8B); the metric read-out, patterns and every score stay float32
    (docs/method.md §3.2)."""
    pruning_orders: int = 0
    """Node pruning rerun with this many random visiting orders (seeded) at T = 0.20, reporting
    how often each node is kept, the union, the intersection and each circuit's completeness;
    0 = off (docs/method.md §5.1)."""
    exact_agreement: bool = False
    """With discovery eap, eap-ig (or auto choosing eap-ig): also run exact pruning at each
    threshold and record the Jaccard index of the two circuits (nodes, edges) in the circuit's
    discovery.agreement (docs/method.md §5.5). Costs what exact discovery costs."""

    def __post_init__(self):
        super().__post_init__()
        check_choice("analysis dtype", self.dtype, AnalysisDtype)
        if isinstance(self.pruning_orders, bool) or not isinstance(self.pruning_orders, int) \
                or self.pruning_orders < 0:
            raise KdmechError(f"pruning_orders must be an integer ≥ 0 (0 = off), got {self.pruning_orders!r}")


LIGHT_PAIR_OPTIONS = AnalyzeOptions(noise_sigmas=(0.0, 0.05, 0.2, 0.5, 1.0), noise_seeds=2, n_boot=500)
"""The end-of-run pair analysis of the quickstart and sweeps: five noise levels, two seeds, a
lighter bootstrap, to fit their time budgets."""


@dataclass(frozen=True)
class PairAnalysisPlan:
    """What the end-of-run pair analysis of a distillation run reads: the run's task and the
    pair-analysis options."""

    task: str
    options: AnalyzeOptions


def pair_analysis_plan(schedule: AnalysisSchedule, base: AnalyzeOptions = LIGHT_PAIR_OPTIONS) -> PairAnalysisPlan:
    """The pair analysis of a run whose checkpoints were analysed with `schedule`: every option
    the two share (`AnalysisOptions`: prompts, gate, ablation, method, preset, budget) is the
    run's, and so is its task; the rest (thresholds, noise, bootstrap) is `base`'s. So a report
    never puts a run's checkpoint numbers beside a pair analysis of other prompts or methods."""
    shared = {f.name: getattr(schedule, f.name) for f in fields(AnalysisOptions)}
    return PairAnalysisPlan(schedule.task, replace(base, **shared))
