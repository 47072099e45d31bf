"""One checkpoint analysis, the same wherever it runs (the training callback, `kdmech analyze`,
the quickstart, sweeps): profile the student, compare it with the teacher's once-computed side,
apply the preset, and at circuit steps discover both circuits and run the probes.

Models and prompts in, a `CheckpointRecord` out; no Lightning, no W&B. Its one file is the
teacher side's disk cache (`kdmech.analysis.teacher_cache`; `KDMECH_CACHE=off` turns it off),
read back only for the same teacher weights, prompts and options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

import torch

from kdmech.analysis import teacher_cache
from kdmech.analysis.attribution.discovery import CircuitFinder
from kdmech.analysis.attribution.watch import checkpoint_attribution
from kdmech.analysis.circuit import REFERENCE_THRESHOLD
from kdmech.analysis.options import AnalysisOptions
from kdmech.analysis.pair import compare
from kdmech.analysis.presets import alignment_side, get_preset, realign
from kdmech.analysis.probes import (logit_attribution, mlp_write_norms, similar_member_from_items,
                                    similar_member_scores, successor_scores)
from kdmech.analysis.profile import ModelProfile, profile
from kdmech.analysis.record import CheckpointRecord, CircuitRecord
from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptSet


def run_probes(prof: ModelProfile, tokenizer) -> dict:
    """Every mechanism probe on one model, each on its own: one that does not apply (an
    encoder's residual stream, a metric that is not a logit difference) records why."""
    def attempt(fn):
        try:
            result = fn()
            return result.to_json() if hasattr(result, "to_json") else result
        except KdmechError as e:
            return {"error": str(e)}

    return {"similar_member": attempt(lambda: similar_member_scores(prof)),
            "similar_member_from_items": attempt(lambda: similar_member_from_items(prof)),
            "successor": attempt(lambda: successor_scores(prof.engine, tokenizer)),
            "logit_attribution": attempt(lambda: logit_attribution(prof.engine)),
            "mlp_write_norm": attempt(lambda: mlp_write_norms(prof))}


@dataclass
class TeacherSide:
    """What a checkpoint analysis needs of the teacher, computed once per run and prompt set:
    its profile, what A reads of it under the preset (`presets.alignment_side`; None: the
    profile itself), its circuit and probes (on demand)."""

    profile: ModelProfile
    tokenizer: object
    options: AnalysisOptions
    competence: dict = field(default_factory=dict)
    alignment: ModelProfile | None = None
    _circuits: dict = field(default_factory=dict)
    _rebuild: Callable[[], ModelProfile] | None = field(default=None, repr=False)
    """Recomputes the profile with its engine (a side read from the cache has none)."""
    _cache_key: str | None = None
    """Where the side is kept on disk (kdmech.analysis.teacher_cache), None: not kept."""

    @classmethod
    def build(cls, teacher, tokenizer, prompts: PromptSet, options: AnalysisOptions,
              competence: dict | None = None) -> "TeacherSide":
        prof = _teacher_profile(teacher, tokenizer, prompts, options)
        return cls(prof, tokenizer, options, competence or {}, _alignment_side(prof, tokenizer, prompts, options))

    @classmethod
    def load_or_build(cls, teacher, tokenizer, prompts: PromptSet, options: AnalysisOptions,
                      competence: dict | None = None) -> "TeacherSide":
        """`build`, or what an earlier run kept on disk for the same teacher weights, prompts,
        options and analysis code (kdmech.analysis.teacher_cache): the same numbers without
        the teacher's forwards. A side built here is kept for later runs, its circuits too."""
        if teacher_cache.cache_dir() is None:
            return cls.build(teacher, tokenizer, prompts, options, competence)
        device = next(teacher.parameters()).device
        key = teacher_cache.cache_key(_fingerprint(teacher.parameters(), prompts), prompts,
                                      options, device)
        payload = teacher_cache.load(key)
        if payload is None:
            side = cls.build(teacher, tokenizer, prompts, options, competence)
            side._cache_key = key
            side._store()
            return side
        prof, side, circuits = teacher_cache.from_payload(payload, device)
        return cls(prof, tokenizer, options, competence or {}, side, circuits,
                   lambda: _teacher_profile(teacher, tokenizer, prompts, options), key)

    def circuit_and_probes(self, threshold: float = REFERENCE_THRESHOLD):
        if threshold not in self._circuits:
            if self.profile.engine is None:  # read from the cache: the engine is needed now
                self.profile = self._rebuild()
            self._circuits[threshold] = (CircuitFinder.of(self.options, self.profile)(self.profile.engine, threshold),
                                         run_probes(self.profile, self.tokenizer))
            self._store()
        return self._circuits[threshold]

    def _store(self) -> None:
        if self._cache_key is not None:
            teacher_cache.store(self._cache_key, teacher_cache.to_payload(
                self.profile, self.alignment, self._circuits))

    @property
    def weak(self) -> bool:
        return bool(self.competence.get("weak", False))


def _alignment_side(prof: ModelProfile, tokenizer, prompts: PromptSet, options: AnalysisOptions):
    """What A reads of a model under the options' preset (`presets.alignment_side`)."""
    conventions = get_preset(options.preset).conventions(prompts.task)
    return alignment_side(prof, conventions, options.authors_sampling, tokenizer.bos_token_id)


def _teacher_profile(teacher, tokenizer, prompts: PromptSet, options: AnalysisOptions) -> ModelProfile:
    # circuits (at a checkpoint or the end) path-patch on the teacher's engine: one corrupted run
    return profile(teacher, tokenizer, prompts, options.ablation,
                   keep_corrupted=getattr(options, "circuits", False),
                   max_batch_tokens=options.max_batch_tokens)


_SHARED: dict = {}


def shared_teacher_side(teacher, prompts: PromptSet, options: AnalysisOptions) -> dict:
    """The `teacher_side` dict the callbacks of a run fill (kdmech.callbacks), shared with every
    later run in this process that analyses the same teacher weights on the same prompts with
    the same options — the quickstart's students, a sweep's points: a frozen teacher's profile,
    circuit and probes are computed once, not once per run. Only the latest key is kept."""
    key = (_fingerprint(teacher.parameters(), prompts), type(options).__name__, repr(options.compare_options()),
           options.ablation, options.preset, options.authors_sampling, options.sender_source,
           getattr(options, "circuits", False), prompts.task,
           options.max_batch_tokens,  # the teacher engine's later forwards keep the run's budget
           options.discovery, options.ig_steps, options.attribution_dtype)
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = {}
    return _SHARED[key]


def forget_shared_teacher_sides() -> None:
    """Drop the shared teacher sides (benchmarks time each run on its own)."""
    _SHARED.clear()


def _fingerprint(parameters, prompts: PromptSet) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in (*parameters, prompts.clean, prompts.corrupted, prompts.answers, prompts.wrong_answers,
              prompts.positions):
        h.update(t.detach().to("cpu", copy=True).contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CheckpointResult(NamedTuple):
    record: CheckpointRecord
    profile: ModelProfile
    """The student's profile, for further analyses on the same prompts."""
    alignment: ModelProfile | None
    """What A read of the student under the preset (`presets.alignment_side`; None: `profile`)."""


def analyze_checkpoint(teacher: TeacherSide, student, tokenizer, prompts: PromptSet, step: int,
                       circuits: bool = False, threshold: float = REFERENCE_THRESHOLD) -> CheckpointResult:
    """The record of one checkpoint: profile, comparison with the teacher, the preset's A,
    with `circuits` both circuits at `threshold` and the probes, and with the options'
    `attribution_scores` the student's node attribution scores."""
    options = teacher.options
    preset = get_preset(options.preset)
    prof = profile(student, tokenizer, prompts, options.ablation, keep_corrupted=circuits,
                   max_batch_tokens=options.max_batch_tokens)
    pair = compare(teacher.profile, prof, step, prompts.task, **options.compare_options())
    student_side = _alignment_side(prof, tokenizer, prompts, options)
    pair = realign(pair, preset, teacher.profile, prof, teacher.alignment, student_side, options.authors_sampling)
    record = CheckpointRecord(replace(pair, teacher_competence=teacher.competence))
    if getattr(options, "attribution_scores", False):
        record = replace(record, attribution=checkpoint_attribution(
            prof.engine, options.discovery, options.ig_steps, options.attribution_dtype))
    if circuits:
        record = replace(record, circuits=circuit_record(teacher, prof, tokenizer, step, threshold))
    return CheckpointResult(record, prof, student_side)


def circuit_record(teacher: TeacherSide, student: ModelProfile, tokenizer, step: int,
                   threshold: float = REFERENCE_THRESHOLD) -> CircuitRecord:
    """Both circuits at `threshold` and both models' probes; a student that does not solve the
    task (no positive LD) yields a record saying so."""
    try:
        t_circuit, t_probes = teacher.circuit_and_probes(threshold)
        s_circuit = CircuitFinder.of(teacher.options, student)(student.engine, threshold)
    except KdmechError as e:
        return CircuitRecord(step, threshold, error=str(e), teacher_weak=teacher.weak)
    return CircuitRecord(step, threshold, t_circuit, s_circuit,
                         {"teacher": t_probes, "student": run_probes(student, tokenizer)},
                         teacher_weak=teacher.weak)
