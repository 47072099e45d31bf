"""Attribution scores at checkpoints (`--analysis.attribution_scores`, docs/method.md §5.5):
the student's node scores in the step record equal plain autograd with Hugging Face hooks; they
survive the record's round trip, fill the history's attribution columns and the timeline's
node × step picture; a run without them writes the files it wrote before."""

import copy
import json
import csv

import pytest
import torch
from test_attribution import hooked_eap, solving

from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.record import CheckpointRecord
from kdmech.report.timeline import picture_names, student_timeline
from kdmech.run_layout import RunLayout


def perturbed(model, seed):
    student = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return student


def test_checkpoint_scores_in_the_record_history_and_timeline(tiny_gpt2, tokenizer, prompts, tmp_path):
    ps = solving(prompts)
    options = AnalysisSchedule(discovery="eap", attribution_scores=True, filter_prompts=False, min_prompts=1,
                               allow_weak_teacher=True)
    side = TeacherSide.build(tiny_gpt2, tokenizer, ps, options)
    layout = RunLayout(tmp_path)
    for step, seed in ((0, 1), (10, 2)):
        student = perturbed(tiny_gpt2, seed)
        record = analyze_checkpoint(side, student, tokenizer, ps, step).record
        a = record.attribution
        assert (a.method, a.ig_steps, a.error) == ("eap", 1, "")
        oracle = hooked_eap(student, side.profile.engine.prompts, lambda l, m=student: m.transformer.h[l].attn.c_proj,
                            lambda l, m=student: m.transformer.h[l].mlp, 2, 4,
                            lambda ids, m=student: m(input_ids=ids).logits)
        assert a.scores.keys() == oracle.keys()
        for node in oracle:
            assert a.scores[node] == pytest.approx(oracle[node], rel=1e-4, abs=1e-5), node
        record.save(layout, "s")
        assert CheckpointRecord.load(layout, "s", step).attribution == a
    student_timeline(layout, "s")
    assert "attribution_over_steps" in picture_names(layout, "s")
    with open(layout.history_csv("s"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = CheckpointRecord.load(layout, "s", 10).attribution
    for row in (r for r in rows if r["step"] == "10"):
        assert float(row["attribution_drop"]) == pytest.approx(-100 * last.scores[row["node"]] / last.metric)


def test_without_the_option_nothing_changes(tiny_gpt2, tokenizer, prompts, tmp_path):
    ps = solving(prompts)
    options = AnalysisSchedule(filter_prompts=False, min_prompts=1, allow_weak_teacher=True)
    side = TeacherSide.build(tiny_gpt2, tokenizer, ps, options)
    record = analyze_checkpoint(side, perturbed(tiny_gpt2, 1), tokenizer, ps, 0).record
    assert record.attribution is None
    layout = RunLayout(tmp_path)
    record.save(layout, "s")
    assert set(json.loads(layout.step_json("s", 0).read_text())) == set(record.pair.to_json())
    student_timeline(layout, "s")
    assert "attribution_over_steps" not in picture_names(layout, "s")
    with open(layout.history_csv("s"), newline="") as fh:
        assert "attribution" not in next(csv.reader(fh))
