"""Trainer controls: --trainer.* and --devices reach the Lightning Trainer;
validation every N optimizer steps logs the teacher's and the student's held-out CE and
perplexity, KL(teacher ‖ student) and top-1 agreement to W&B; checkpoints keep their own
cadence; bf16-mixed trains on the CPU while the checkpoint analyses stay in fp32."""

import torch
import pytest
from jsonargparse import ArgumentParser

import kdmech.callbacks
import kdmech.commands.distill as distil_module
from kdmech.distill.trainer import TrainerOptions, _checkpoint_step
from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
from kdmech.commands.distill_shared import distill_shared
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinyGPT2Spec, build_word_tokenizer
from kdmech.tracking import STEP_KEY, offline_folders, offline_history

NAME = "d0.5-w1-h1"
VAL_KEYS = ("val/ce", "val/ppl", "val/teacher_ce", "val/teacher_ppl", "val/kl", "val/kl_t1", "val/top1_agreement")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tok = build_word_tokenizer()
    folder = tmp_path_factory.mktemp("gpt2")
    TinyGPT2Spec(2, 2, 16, 64).build(tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("command", [distill, distill_shared])
def test_cli_parses_trainer_options_and_devices(command):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(command)
    base = ["--teacher", "t", "--out", "o"] + (["--capacities", "[{depth: 0.5}]"] if command is distill_shared else [])
    args = parser.parse_args(base + ["--trainer.precision", "bf16-mixed", "--trainer.accumulate_grad_batches", "4",
                                     "--trainer.gradient_clip_val", "0.5", "--trainer.val_check_interval", "25",
                                     "--trainer.checkpoint_every_n_steps", "50"])
    assert parser.instantiate_classes(args).trainer == TrainerOptions("bf16-mixed", 4, 0.5, 25, 50)
    data = parser.instantiate_classes(parser.parse_args(base + ["--data.files", "[a.txt, b.txt]", "--data.block_size",
                                                                "64", "--data.task_fraction", "0.1"])).data
    assert (data.files, data.block_size, data.task_fraction, data.enabled) == (["a.txt", "b.txt"], 64, 0.1, True)
    assert not parser.instantiate_classes(parser.parse_args(base)).data.enabled  # default: the task corpus
    assert parser.parse_args(base + ["--devices", "auto"]).devices == "auto"
    assert parser.parse_args(base + ["--devices", "3"]).devices == 3
    assert parser.parse_args(base + ["--devices", "[0, 2]"]).devices == [0, 2]
    with pytest.raises((SystemExit, ValueError, TypeError, KeyError, Exception)):  # the parser refuses it
        parser.parse_args(base + ["--trainer.precision", "8-bit"])


def test_bad_trainer_options_are_refused():
    for bad in ({"accumulate_grad_batches": 0}, {"gradient_clip_val": 0.0}, {"val_check_interval": 0},
                {"checkpoint_every_n_steps": -1}):
        with pytest.raises(KdmechError):
            TrainerOptions(**bad)


def test_controls_reach_the_trainer_and_validation_logs_convergence(teacher, tmp_path, monkeypatch):
    built, autocast_in_analysis = [], []

    def capture(*args, **kw):
        built.append(make(*args, **kw))
        return built[-1]

    def analyse(teacher_model, student, *args, **kw):
        autocast_in_analysis.append((torch.is_autocast_enabled("cpu"), next(student.parameters()).dtype))
        return analyze_checkpoint(teacher_model, student, *args, **kw)

    make, analyze_checkpoint = distil_module.make_trainer, kdmech.callbacks.analyze_checkpoint
    monkeypatch.setattr(distil_module, "make_trainer", capture)
    monkeypatch.setattr(kdmech.callbacks, "analyze_checkpoint", analyse)
    options = TrainerOptions(precision="bf16-mixed", accumulate_grad_batches=2, gradient_clip_val=1.0,
                             val_check_interval=2, checkpoint_every_n_steps=3)
    result = distill(str(teacher), tmp_path, CapacitySpec(depth=0.5), trainer=options, devices="auto",
                     accelerator="cpu", wandb="offline", progress=False,
                     training=DistillTraining(steps=6, batch_size=4, n_train=20, warmup_steps=1, seed=1),
                     analysis=AnalysisSchedule(every_n_steps=4, per_type=2, min_prompts=0, allow_weak_teacher=True,
                                               filter_prompts=False, circuits=False))
    (fit,) = built
    assert fit.precision == "bf16-mixed" and fit.accumulate_grad_batches == 2 and fit.gradient_clip_val == 1.0
    # validation loop every gcd(2, 3) = 1 optimizer step = 2 batches (Lightning counts batches)
    assert fit.val_check_interval == 2 and fit.global_step == 6 and fit.num_devices == 1
    assert result.steps == [0, 4, 6]
    assert autocast_in_analysis and all(a == (False, torch.float32) for a in autocast_in_analysis)
    # checkpoints at multiples of 3 only: last at 6, the one before at 3
    ckpt = tmp_path / "checkpoints" / NAME
    assert (_checkpoint_step(ckpt / "last.ckpt"), _checkpoint_step(ckpt / "previous.ckpt")) == (6, 3)
    run_id = (ckpt / "wandb_run_id").read_text().strip()
    (folder,) = offline_folders(tmp_path, run_id)
    rows = offline_history(folder)
    val_steps = {}
    for row in rows:
        for key in VAL_KEYS:
            if key in row:
                val_steps.setdefault(key, set()).add(row[STEP_KEY])
    # after optimizer steps 2, 4 and 6 only; Lightning logs a validation at the count of
    # optimizer steps before the one just taken (its _batches_that_stepped), hence 1, 3, 5
    assert val_steps == {key: {1, 3, 5} for key in VAL_KEYS}, val_steps
    last = {k: v for row in rows if row.get(STEP_KEY) == 5 for k, v in row.items()}
    assert last["val/ppl"] == pytest.approx(torch.tensor(last["val/ce"]).exp().item(), rel=1e-3)
    assert last["val/teacher_ppl"] == pytest.approx(torch.tensor(last["val/teacher_ce"]).exp().item(), rel=1e-3)
    assert 0.0 <= last["val/top1_agreement"] <= 1.0 and last["val/kl_t1"] >= 0.0
