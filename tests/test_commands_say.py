"""Commands that say what they do: --version, the resume lines, --resume of a finished run
(nothing redone, nothing written), the interrupt line naming the command that continues,
Lightning's option names, `--data PATH`, and --data.block_size fitted to the teacher's context
(the quickstart's tiny teacher has 64 positions) — distilling it on a text file with every
--data default."""

import json
from pathlib import Path

import pytest

from kdmech.cli import interrupted_line, main
from kdmech.cli_aliases import data_path, lightning_names


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """The quickstart's tiny GPT-2 teacher architecture (4 layers, 64 positions), untrained:
    distillation with analyses off needs no skill."""
    from kdmech.models import TinySpec, build_word_tokenizer, tiny_spec

    folder = tmp_path_factory.mktemp("t") / "teacher"
    tokenizer = build_word_tokenizer()
    tiny_spec("gpt2", TinySpec()).build(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "corpus.txt"
    words = "the cat sat on the mat and one two three four five six seven eight nine ten".split()
    path.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(300)))
    return path


def _distill(teacher, out, steps, *extra):
    return ["distill", "--teacher", str(teacher), "--out", str(out), "--capacity.depth", "0.5",
            "--training.steps", str(steps), "--training.batch_size", "4", "--training.warmup_steps", "1",
            "--training.n_train", "64", "--analysis.enabled", "false", "--trainer.checkpoint_every_n_steps", "2",
            "--progress", "false", *extra]


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_version(capsys):
    import kdmech

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdmech {kdmech.__version__}"


def test_resume_says_where_it_starts_and_a_finished_run_is_left_alone(tiny_teacher, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_distill(tiny_teacher, out, 2, "--resume", "--wandb", "offline")) == 0
    assert f"no checkpoint of d0.5-w1-h1 in {out / 'checkpoints' / 'd0.5-w1-h1'}: starting from step 0" \
        in capsys.readouterr().out
    assert main(_distill(tiny_teacher, out, 4, "--resume", "--wandb", "offline")) == 0
    assert "resuming d0.5-w1-h1 from step 2 of 4" in capsys.readouterr().out
    before = _files(out)
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert main(_distill(tiny_teacher, out, 4, "--resume", "--wandb", "offline")) == 0
    printed = capsys.readouterr().out
    assert "d0.5-w1-h1 finished at step 4 of 4 already" in printed and "nothing to resume" in printed
    assert _files(out) == before  # no file written or touched
    assert sorted((out / "wandb").glob("offline-run-*")) == runs  # no new W&B run


def test_the_interrupt_line_names_the_command_that_continues():
    assert interrupted_line(["distill", "--teacher", "x"]) == "kdmech: interrupted; rerun with --resume to continue"
    sweep = interrupted_line(["sweep", "--config_file", "s.yaml"])
    assert "run the same command again" in sweep and "--resume" not in sweep
    assert interrupted_line(["report", "--folder", "x"]) == "kdmech: interrupted"


def test_lightning_names_are_kdmechs_or_refused_in_one_line(capsys):
    assert lightning_names(["distill", "--trainer.devices", "2", "--trainer.max_steps=50"]) == \
        ["distill", "--devices", "2", "--training.steps=50"]
    assert lightning_names(["analyze", "--trainer.devices", "2"]) == ["analyze", "--trainer.devices", "2"]
    assert main(["distill", "--teacher", "x", "--out", "y", "--trainer.max_epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kdmech: error: --trainer.max_epochs is a Lightning Trainer option kdmech does not take; "
                   "kdmech counts optimizer steps: use --training.steps"]


def test_data_path_is_data_files(tmp_path, corpus):
    assert data_path(["distill", "--data", str(corpus)]) == ["distill", "--data.files", json.dumps([str(corpus)])]
    folder = tmp_path / "texts"
    folder.mkdir()
    for name in ("b.txt", "a.txt"):
        (folder / name).write_text("one two\n")
    assert data_path(["distill", f"--data={folder}"]) == \
        ["distill", "--data.files", json.dumps([str(folder / "a.txt"), str(folder / "b.txt")])]
    config = tmp_path / "data.yaml"
    config.write_text("files: [x.txt]\n")
    assert data_path(["distill", "--data", str(config)]) == ["distill", "--data", str(config)]


def test_a_block_longer_than_the_teachers_context_is_refused_before_loading(tiny_teacher, corpus, tmp_path, capsys):
    assert main(_distill(tiny_teacher, tmp_path / "run", 2, "--data", str(corpus), "--data.block_size", "128",
                         "--wandb", "disabled")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kdmech: error: data.block_size 128 is longer than the teacher's context of 64 tokens; "
                   "give at most 64 (the default)"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_tiny_teacher_distils_on_a_text_file_with_every_data_default(tiny_teacher, corpus, tmp_path):
    """128-token blocks (the old default) would index past its 64 positions and crash."""
    out = tmp_path / "run"
    assert main(_distill(tiny_teacher, out, 2, "--data", str(corpus), "--wandb", "disabled")) == 0
    assert (out / "students" / "d0.5-w1-h1" / "model.safetensors").stat().st_size > 0


def test_the_progress_bar_counts_steps_of_the_total_after_a_resume_too(tiny_teacher, tmp_path, capfd):
    out = tmp_path / "run"
    argv = lambda steps: _distill(tiny_teacher, out, steps, "--wandb", "disabled", "--resume",  # noqa: E731
                                  "--progress", "true")
    assert main(argv(2)) == 0
    first = capfd.readouterr().out  # Lightning's bars write to stdout
    assert "step: 100%" in first and "2/2" in first and "Epoch" not in first
    assert main(argv(4)) == 0
    resumed = capfd.readouterr().out
    assert "2/4" in resumed and "4/4" in resumed and "Epoch" not in resumed
