"""The end-of-run pair analysis reads the run's own analysis options: derived in one function
(`pair_analysis_plan`), used by the sweep and the quickstart. Checked on what the commands
write: the pair analysis' analysis.json beside the run's recorded options."""

import json
from dataclasses import fields

import pytest
import yaml

from kdmech.commands import sweep as sweep_command
from kdmech.commands.analyze import analyze
from kdmech.commands.distill import DistillTraining
from kdmech.commands.quickstart import quickstart
from kdmech.analysis.options import (LIGHT_PAIR_OPTIONS, AnalysisOptions, AnalysisSchedule,
                                     pair_analysis_plan)


def test_every_shared_option_and_the_task_come_from_the_run():
    schedule = AnalysisSchedule(per_type=16, ablation="zero", filter_prompts=False, min_teacher_top1=0.5,
                                min_prompts=8, allow_weak_teacher=True, matching_direction="hungarian",
                                normalization="max", preset="authors",
                                max_batch_tokens=512, task="ioi")
    plan = pair_analysis_plan(schedule)
    assert plan.task == "ioi"
    for f in fields(AnalysisOptions):
        assert getattr(plan.options, f.name) == getattr(schedule, f.name), f.name
    # what only the pair analysis has stays the light defaults
    assert (plan.options.noise_sigmas, plan.options.noise_seeds, plan.options.n_boot) == (
        LIGHT_PAIR_OPTIONS.noise_sigmas, LIGHT_PAIR_OPTIONS.noise_seeds, LIGHT_PAIR_OPTIONS.n_boot)


def test_a_sweeps_pair_analysis_uses_the_points_options(trained_teacher, tmp_path, monkeypatch):
    """per_type, task and allow_weak_teacher of the sweep's `analysis.*` reach the pair analysis.
    16 prompts per type (48) are fewer than min_prompts 200, so the teacher fails the gate and
    only allow_weak_teacher lets the run through; before the pair analysis read the run's
    options it ran numerals with 128 prompts per type and the default gate."""
    teacher, _ = trained_teacher
    config = {"name": "opts", "method": "grid", "parameters": {
        "teacher": {"value": str(teacher)}, "capacity.depth": {"value": 0.5},
        "training.steps": {"value": 4}, "analysis.every_n_steps": {"value": 0},
        "analysis.circuits": {"value": False}, "analysis.per_type": {"value": 16},
        "analysis.min_prompts": {"value": 200}, "analysis.task": {"value": "numerals-any-start"},
        "analysis.allow_weak_teacher": {"value": True}}}
    sweep_file = tmp_path / "opts.yaml"
    sweep_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "sweep"
    tasks = []  # the task each pair analysis is asked for (GPT-2 reads numerals-any-start as numerals)

    def spy(teacher, student, out, task="numerals", *args, **kwargs):
        tasks.append(task)
        return analyze(teacher, student, out, task, *args, **kwargs)

    monkeypatch.setattr(sweep_command, "analyze", spy)
    sweep_command.sweep(sweep_file, out, wandb="disabled", progress=False)
    assert tasks == ["numerals-any-start"]
    (pair,) = (out / "pair-analysis").glob("*/analysis.json")
    result = json.loads(pair.read_text())
    recorded = yaml.safe_load((out / "checkpoints" / pair.parent.name / "config.yaml").read_text())["analysis"]
    assert recorded["task"] == "numerals-any-start"
    assert result["teacher_weak"] is True
    assert result["options"]["per_type"] == recorded["per_type"] == 16
    assert result["options"]["allow_weak_teacher"] is recorded["allow_weak_teacher"] is True
    for name in [f.name for f in fields(AnalysisOptions)]:
        assert result["options"][name] == recorded[name], name


def _presets(value) -> list[str]:
    """Every `preset` recorded anywhere in a JSON value."""
    if isinstance(value, dict):
        return ([value["preset"]] if isinstance(value.get("preset"), str) else []) + [
            p for v in value.values() for p in _presets(v)]
    if isinstance(value, list):
        return [p for v in value for p in _presets(v)]
    return []


@pytest.mark.slow  # a whole quickstart with its pair analysis: minutes
def test_quickstart_authors_preset_reaches_every_json(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    out = tmp_path / "qs"
    quickstart(out, teacher=str(teacher), depths=[0.5], student_training=DistillTraining(steps=4),
               analysis=AnalysisSchedule(every_n_steps=0, circuit_every_n_steps=0, per_type=16, min_prompts=16,
                                         preset="authors"), wandb="disabled", progress=False)
    recorded = {}
    for path in [*(out / "analysis").rglob("*.json"), *(out / "pair-analysis").rglob("analysis.json")]:
        found = _presets(json.loads(path.read_text()))
        if found:
            recorded[path.relative_to(out).as_posix()] = set(found)
    assert "pair-analysis/d0.5-w1-h1/analysis.json" in recorded
    assert any(p.startswith("analysis/d0.5-w1-h1/step_") for p in recorded)
    assert all(found == {"authors"} for found in recorded.values()), recorded
