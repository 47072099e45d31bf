"""The teacher side kept on disk between runs (kdmech.analysis.teacher_cache): a later run reads
the first run's teacher numbers instead of recomputing them, and its records are the same bytes
as a run that computed everything itself."""

import json

import pytest

from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.teacher_cache import cache_dir
from kdmech.models import CapacitySpec, build_student


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDMECH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "teacher-sides"


def _block_calls(model):
    """Forwards through the model's first block, counted by a plain PyTorch hook (copies of the
    model the analyses make carry it too): (calls, the hook's handle)."""
    calls = []
    return calls, model.transformer.h[0].register_forward_hook(lambda *_: calls.append(1))


def _records(side, student, tokenizer, prompts):
    out = []
    for step, circuits in ((0, False), (7, True)):
        record = analyze_checkpoint(side, student, tokenizer, prompts, step, circuits=circuits).record
        out.append(json.dumps(record.pair.to_json()))
        if record.circuits is not None:
            out.append(json.dumps(record.circuits.to_json()))
    return out


def test_a_cached_teacher_side_gives_the_same_records_without_a_teacher_forward(trained_teacher, cache):
    from kdmech.models import load_causal_lm
    from kdmech.tasks import NumeralTask, tokenize_prompts
    from kdmech.tasks.filtering import filter_by_teacher
    teacher, tokenizer = load_causal_lm(trained_teacher[0])  # a teacher with a circuit to keep
    prompts = filter_by_teacher(teacher, tokenize_prompts(NumeralTask(per_type=16, seed=8).prompts(), tokenizer))
    student, _ = build_student(teacher, CapacitySpec(depth=0.5), "every_k", seed=0)
    options = AnalysisSchedule(preset="authors", circuits=True)  # alignment LDs of another ablation too
    competence = {"top1": 1.0, "weak": False}

    cold = TeacherSide.load_or_build(teacher, tokenizer, prompts, options, competence)
    cold_records = _records(cold, student, tokenizer, prompts)
    assert len(list(cache.glob("*.pt"))) == 1

    calls, handle = _block_calls(teacher)
    try:
        warm = TeacherSide.load_or_build(teacher, tokenizer, prompts, options, competence)
        assert warm.profile.engine is None  # read, not recomputed
        assert _records(warm, student, tokenizer, prompts) == cold_records
    finally:
        handle.remove()
    assert calls == []  # the teacher's circuit and probes came from the cache as well
    assert '"teacher": {"threshold"' in cold_records[-1]  # a teacher circuit was found and kept

    # reference: everything computed in place, no cache involved
    reference = TeacherSide.build(teacher, tokenizer, prompts, options, competence)
    assert _records(reference, student, tokenizer, prompts) == cold_records


def test_the_cache_key_follows_the_weights_and_options(tokenizer, prompts, tiny_gpt2, cache):
    options = AnalysisSchedule(circuits=False)
    TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, options)
    TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, options)
    assert len(list(cache.glob("*.pt"))) == 1
    TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, AnalysisSchedule(ablation="zero", circuits=False))
    assert len(list(cache.glob("*.pt"))) == 2
    import copy

    import torch
    other = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        other.transformer.h[1].mlp.c_fc.weight[0, 0] += 1e-3
    side = TeacherSide.load_or_build(other, tokenizer, prompts, options)
    assert side.profile.engine is not None  # other weights: computed, not read
    assert len(list(cache.glob("*.pt"))) == 3


def test_a_torn_file_is_recomputed_and_off_writes_nothing(tokenizer, prompts, tiny_gpt2, cache,
                                                         monkeypatch):
    options = AnalysisSchedule(circuits=False)
    first = TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, options)
    (path,) = cache.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    again = TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, options)
    assert again.profile.engine is not None
    assert again.profile.influence == first.profile.influence
    assert path.stat().st_size > 100  # rewritten whole

    monkeypatch.setenv("KDMECH_CACHE", "off")
    assert cache_dir() is None
    side = TeacherSide.load_or_build(tiny_gpt2, tokenizer, prompts, AnalysisSchedule(ablation="zero"))
    assert side.profile.engine is not None
    assert len(list(cache.glob("*.pt"))) == 1
