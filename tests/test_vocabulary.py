"""One vocabulary: an option means the same in every command. `--teacher` is
always a model (a folder or hub name), the tiny teacher's sizes are `--tiny.*` wherever they
are taken, and `distill-shared` takes every option `distill` takes."""

import json

import pytest
from jsonargparse import ArgumentParser

from kdmech.cli import main
from kdmech.commands.distill import distill
from kdmech.commands.distill_shared import distill_shared
from kdmech.commands.quickstart import quickstart
from kdmech.teacher import train_teacher
from kdmech.models import TinySpec, tiny_spec


def options(func) -> dict[str, object]:
    """Every option of a command (dotted, as on the command line) and its action."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(func)
    out = {}
    for action in parser._actions:
        for s in action.option_strings:
            if s.startswith("--") and s != "--help":
                out[s[2:]] = action
    return out


def test_distill_shared_takes_every_option_of_distill():
    one, shared = options(distill), options(distill_shared)
    renamed = {"capacity": "capacities", "name": "names"}  # one student there, several here
    expected = {k for k in one if k.split(".")[0] not in renamed}
    assert expected <= set(shared), sorted(expected - set(shared))
    assert {"capacities", "names"} <= set(shared)
    for key in expected:  # the same types and defaults (e.g. devices: a count, a list or auto)
        a, b = one[key], shared[key]
        assert (getattr(a, "_typehint", None), a.default) == (getattr(b, "_typehint", None), b.default), key


def test_tiny_sizes_have_one_name():
    q, t = options(quickstart), options(train_teacher)
    tiny_q = {k for k in q if k.startswith("tiny.")}
    tiny_t = {k for k in t if k.startswith("tiny.")}
    assert tiny_q == tiny_t == {f"tiny.{f}" for f in ("n_layer", "n_head", "n_embd", "n_positions", "n_kv_head",
                                                        "model_type")}
    for opts in (q, t):
        assert not any(k.startswith(("model.", "teacher.")) for k in opts)


def test_teacher_is_a_model_everywhere():
    for func in (quickstart, distill, distill_shared):
        opts = options(func)
        assert "teacher" in opts and not any(k.startswith("teacher.") for k in opts), func.__name__
    assert options(quickstart)["teacher"].default is None  # not given: the tiny teacher is trained


def test_quickstart_teacher_is_checked_as_distill_checks_it(tmp_path, capsys, tokenizer):
    no_config = tmp_path / "empty"
    no_config.mkdir()
    a_file = tmp_path / "weights.bin"
    a_file.write_text("x")
    bert = tmp_path / "bert"
    tiny_spec("bert", TinySpec(1, 2, 16, 64)).build(tokenizer, seed=0).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    for teacher, needle in [(no_config, "has no config.json"), (a_file, "is a file"),
                            (bert, "pass --family bert")]:
        out = tmp_path / "out"
        capsys.readouterr()  # save_pretrained's progress bar
        code = main(["quickstart", "--out", str(out), "--teacher", str(teacher)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
        assert not (out / "teacher").exists()  # nothing trained


@pytest.mark.slow
def test_quickstart_with_a_given_teacher_trains_none(tmp_path, trained_teacher):
    teacher = trained_teacher[0]
    from kdmech.analysis.options import AnalysisSchedule
    from kdmech.commands.distill import DistillTraining

    out = tmp_path / "run"
    summary = quickstart(out, depths=[0.5], teacher=str(teacher),
                         student_training=DistillTraining(steps=2, batch_size=8, n_train=64),
                         analysis=AnalysisSchedule(every_n_steps=2, circuits=False, per_type=4, min_prompts=0,
                                                   filter_prompts=False, allow_weak_teacher=True),
                         wandb="disabled", progress=False)
    assert not (out / "teacher").exists()
    assert summary["teacher"]["path"] == str(teacher) and summary["teacher"]["given"]
    assert json.loads((out / "summary.json").read_text())["teacher"]["path"] == str(teacher)
    assert summary["teacher"]["top1"] == pytest.approx(trained_teacher[1]["top1"], abs=1e-6)
    provenance = json.loads((out / "students" / summary["students"][0]["name"] / "provenance.json").read_text())
    assert provenance["teacher"] == str(teacher)
