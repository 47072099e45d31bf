"""A teacher that has not learned its task is refused before anything is analysed (one line,
exit 2, nothing written), analysed only on request and then marked everywhere; the tiny
teacher's training stops at its target or fails in one line."""

import json

import pytest

from kdmech.cli import main
from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
from kdmech.teacher import TeacherTraining, train_teacher
from kdmech.errors import KdmechError
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import competent_prompts, model_logits


@pytest.fixture(scope="module")
def random_teacher(tiny_gpt2, tokenizer, tmp_path_factory):
    """A random GPT-2 saved like any teacher: it does not do the task."""
    folder = tmp_path_factory.mktemp("random") / "teacher"
    tiny_gpt2.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _one_line_exit_2(capsys, args) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("kdmech: error:"), err
    assert "Traceback" not in err
    return err


def test_gate_numbers_match_an_independent_count(tiny_gpt2, tokenizer):
    prompts = tokenize_prompts(NumeralTask(per_type=8, seed=2).prompts(), tokenizer)
    logits = model_logits(tiny_gpt2, prompts)
    top1 = (logits.argmax(-1) == prompts.answers).float().mean().item()
    p = logits.softmax(-1)
    rows = range(len(prompts))
    kept = sum(1 for i in rows if logits[i].argmax() == prompts.answers[i]
               and p[i, prompts.answers[i]] > 2 * p[i, prompts.wrong_answers[i]])
    with pytest.raises(KdmechError) as e:
        competent_prompts(tiny_gpt2, prompts, min_top1=0.9, min_prompts=64)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"top-1 {top1:.3f}" in msg and f"by {0.9 - top1:.3f}" in msg
    assert f"{kept} of {len(prompts)} prompts survive" in msg and f"by {64 - kept}" in msg
    assert "allow_weak_teacher" in msg
    # allowed, nothing filtered: every prompt kept, the record says weak
    kept_set, competence = competent_prompts(tiny_gpt2, prompts, allow_weak=True, filter_prompts=False)
    assert len(kept_set) == len(prompts) and competence.weak
    assert competence.top1 == pytest.approx(top1)


def test_analyze_refuses_a_weak_teacher_in_one_line(random_teacher, tmp_path, capsys):
    out = tmp_path / "out"
    err = _one_line_exit_2(capsys, ["analyze", "--teacher", str(random_teacher), "--student",
                                    str(random_teacher), "--out", str(out), "--progress", "false"])
    assert "teacher not analysed" in err and "below 0.9" in err
    assert not out.exists()


def test_distill_refuses_a_weak_teacher_before_writing(random_teacher, tmp_path, capsys):
    out = tmp_path / "run"
    err = _one_line_exit_2(capsys, ["distill", "--teacher", str(random_teacher), "--out", str(out),
                                    "--training.steps", "2", "--wandb", "disabled", "--progress", "false"])
    assert "teacher not analysed" in err
    assert not out.exists()


def test_allow_weak_teacher_marks_every_output(random_teacher, tmp_path):
    from kdmech.report.html import write_report

    out = tmp_path / "run"
    schedule = AnalysisSchedule(every_n_steps=0, per_type=4, circuits=True, filter_prompts=False,
                                allow_weak_teacher=True)
    result = distill(str(random_teacher), out, training=DistillTraining(steps=2, batch_size=8, n_train=64),
                     analysis=schedule, wandb="disabled", progress=False)
    assert result.teacher_weak
    steps = sorted((out / "analysis").glob("*/step_*.json"))
    circuits = sorted((out / "analysis").glob("*/circuit_step_*.json"))
    assert steps and circuits
    for f in steps + circuits:
        assert json.loads(f.read_text())["teacher_weak"] is True, f
    page = write_report(out).read_text()
    assert 'id="teacher-weak"' in page and "teacher_weak" in page


def test_analyze_with_allow_weak_teacher_marks_its_json(random_teacher, tmp_path):
    from kdmech.commands.analyze import AnalyzeOptions, analyze

    r = analyze(str(random_teacher), str(random_teacher), tmp_path / "a", analyses=["influence"],
                analysis=AnalyzeOptions(per_type=4, filter_prompts=False, allow_weak_teacher=True, n_boot=10),
                progress=False, wandb="disabled").to_json()
    saved = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert r["teacher_weak"] and saved["teacher_weak"] is True
    assert saved["teacher_competence"]["n_prompts"] == 12


def test_teacher_out_of_budget_fails_in_one_line_and_saves_nothing(tmp_path):
    out = tmp_path / "teacher"
    with pytest.raises(KdmechError) as e:
        train_teacher(out, training=TeacherTraining(steps=20, val_every=10), wandb="disabled", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "held-out top-1" in msg and "after 20 steps" in msg
    assert not out.exists() and not (tmp_path / "teacher.tmp").exists()


def test_trained_teacher_stopped_at_its_target(trained_teacher):
    _, scores = trained_teacher
    assert scores["top1"] >= scores["target_top1"] == 0.99
    # early stopping: a validation step, inside the budget
    assert scores["steps"] % TeacherTraining().val_every == 0
    assert scores["steps"] <= TeacherTraining().steps
