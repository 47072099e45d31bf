"""The teacher of a run: the tiny teacher's training (`kdmech train-teacher`: a tiny GPT-2, next
token, or BERT, masked LM, on the synthetic numeral corpus) and `resolve_teacher`, which turns a
command's `--teacher` (`tiny`, a W&B model artifact, a hub name or folder) into a model folder.
A checkpoint after every validation (checkpoints/<out's name>/ beside `out`) lets `--resume`
continue a killed run exactly, or one that ended below its target with a larger step budget."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

from kdmech.distill.trainer import ResumableCheckpoint, quiet_lightning, resume_point, trainer
from kdmech.errors import KdmechError
from kdmech.distill import CausalLMModule, CorpusDataModule, MaskedLMModule, make_masker
from kdmech.models import TinySpec, build_word_tokenizer, tiny_spec
from kdmech.models.family import get_family
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.run_config import resolved, write_config_yaml
from kdmech.run_layout import CONFIG_YAML, EVAL_JSON, RunLayout, atomic_dir
from kdmech.lineage import log_model, study_group, teacher_artifact
from kdmech.tracking import WandbMode, begin_run, finish, make_logger
from kdmech.validation import check_out_dir

HELD_OUT_SEED = 1234  # numeral prompts never drawn for training or analysis


@dataclass(frozen=True)
class TeacherTraining:
    """Optimisation of the tiny teacher: train until it has learned the task (held-out top-1 ≥
    `target_top1`, checked every `val_every` steps) or the step budget runs out."""

    steps: int = 3000
    """Step budget: the most optimizer steps before giving up."""
    batch_size: int = 64
    lr: float | None = None
    """Peak learning rate; default the family's `tiny_teacher_lr` (3e-3 GPT-2, 1e-3 BERT)."""
    warmup_steps: int = 100
    gradient_clip: float = 1.0
    """Clip the gradient norm to this (0 = off)."""
    n_train: int = 20000
    """Sequences in the synthetic corpus."""
    target_top1: float = 0.99
    """Stop once held-out top-1 on the task reaches this; below it when the budget is spent, the
    command fails (a teacher that has not learned its task is not worth analysing)."""
    val_every: int = 100
    """Validate on held-out task prompts every N steps."""
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.val_every < 1 or self.batch_size < 1:
            raise KdmechError(f"steps, val_every and batch_size must be ≥ 1, got {self.steps}, "
                              f"{self.val_every}, {self.batch_size}")
        if not 0 < self.target_top1 <= 1:
            raise KdmechError(f"target_top1 must be in (0, 1], got {self.target_top1}")


class StopAtTarget(EarlyStopping):
    """EarlyStopping at a threshold that remembers, in its checkpointed state, that it stopped:
    a run resumed from the checkpoint written after that validation stops too (Lightning does
    not keep `should_stop` across a resume)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reached = False

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self.reached = self.reached or bool(trainer.should_stop)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.reached:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {**super().state_dict(), "reached": self.reached}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.reached = state_dict.get("reached", False)


def _lm_module(fam, net, tokenizer, lr: float, training: TeacherTraining, held_out):
    """The family's LM module: masked (with its masker) or causal."""
    masker = make_masker(fam, tokenizer, net.config.vocab_size, training.seed)
    if masker is not None:
        return MaskedLMModule(net, masker, lr, training.warmup_steps, held_out, training.seed)
    return CausalLMModule(net, lr, training.warmup_steps, held_out, training.seed)


def _log_final(logger, scores: dict, net) -> None:
    """The teacher's held-out scores as W&B rows and run summary."""
    step = scores["steps"]
    finals = {"teacher/top1_held_out": scores["top1"], "teacher/ld_held_out": scores["logit_diff"],
              "teacher/steps_to_target": step}
    logger.log_metrics(finals, step=step)
    logger.experiment.summary.update({"final/top1": scores["top1"], "final/logit_diff": scores["logit_diff"],
                                      "final/steps": step,
                                      "final/parameters": sum(p.numel() for p in net.parameters())})


def _check_target(scores: dict, family: str, target: float) -> None:
    if scores["top1"] < target:
        raise KdmechError(f"the {family} teacher reached held-out top-1 {scores['top1']:.3f} after "
                          f"{scores['steps']} steps, below the target {target}; nothing "
                          f"saved: raise --training.steps (with --resume to continue from there) or "
                          f"change --training.lr/--training.seed")


def _save(out: Path, net, tokenizer, scores: dict, config_yaml: Path) -> None:
    """The teacher folder: weights, tokenizer, eval.json and the run's config.yaml; then, in
    W&B, the model artifact `teacher-<group>` (kdmech.lineage)."""
    with atomic_dir(out) as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / EVAL_JSON).write_text(json.dumps(scores, indent=1))
        shutil.copyfile(config_yaml, tmp / CONFIG_YAML)


def train_teacher(out: Path, tiny: TinySpec = TinySpec(),
                  training: TeacherTraining = TeacherTraining(), wandb: WandbMode = "auto",
                  wandb_dir: Path | None = None, progress: bool = True,
                  family: Literal["gpt2", "bert", "llama"] = "gpt2", resume: bool = False, project: str = "kdmech",
                  entity: str | None = None, tags: list[str] | None = None) -> dict:
    """Train a tiny GPT-2, BERT or Llama-layout teacher and save it (model + tokenizer) to `out`.

    Args:
        out: Folder to write (save_pretrained: safetensors, config, tokenizer, eval.json).
        tiny: Sizes of the tiny teacher (every family; `--tiny.*`, as in `quickstart`;
            `n_kv_head` and `model_type` for llama only).
        training: Optimisation settings.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        wandb_dir: Where W&B run folders go (default: the parent of `out`).
        progress: Show the progress bar.
        family: gpt2 (next-token prediction), bert (masked LM, 15% with 80/10/10, evaluated
            on cloze numerals with starts 1..8, read at [MASK]) or llama (next-token prediction;
            Llama, Mistral, Qwen2 or Qwen3 by `--tiny.model_type`, grouped-query attention).
        resume: Continue from the last checkpoint (checkpoints/<out's name>/last.ckpt beside
            `out`) and its W&B run, exactly: the teacher equals an uninterrupted run's.
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of the run.
    """
    config = resolved("train-teacher", locals())  # this command's options, as --config reads them
    out = Path(out)
    check_out_dir(out, replaced=True)
    check_out_dir(wandb_dir or out.parent, "wandb_dir")
    quiet_lightning()
    layout = RunLayout(out.parent)
    ckpt_dir, run_id_file = layout.checkpoints(out.name), layout.wandb_run_id(out.name)
    point = resume_point(ckpt_dir) if resume else None
    start = time.perf_counter()
    L.seed_everything(training.seed, verbose=False)
    tokenizer = build_word_tokenizer()
    fam = get_family(family)
    lr = training.lr if training.lr is not None else fam.tiny_teacher_lr
    net = tiny_spec(family, tiny).build(tokenizer, seed=training.seed)
    # Cloze form with starts 1..8 kept (renumbered, the answer would always be 5)
    task = NumeralTask(seed=HELD_OUT_SEED, cloze=fam.cloze, renumber=False)
    held_out = tokenize_prompts(task.prompts(), tokenizer, fam.kind)
    data = CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed, fam.kind)
    module = _lm_module(fam, net, tokenizer, lr, training, held_out)
    group = study_group(wandb_dir or out.parent)
    logger = make_logger(wandb_dir or out.parent, name="teacher", group=group, job_type="teacher", mode=wandb,
                         config=config, project=project, entity=entity, tags=tags,
                         run_id=run_id_file.read_text().strip() if resume and run_id_file.exists() else None,
                         journal=layout.wandb_journal(out.name))
    write_config_yaml(layout.run_config(out.name), config)
    # Lightning stops on a strict ">", so the threshold sits just below the target.
    stop = StopAtTarget("val/top1", mode="max", stopping_threshold=training.target_top1 - 1e-9,
                        patience=training.steps, check_on_train_epoch_end=False)
    try:
        fit = trainer(training.steps, logger, [stop, ResumableCheckpoint(ckpt_dir)], progress=progress,
                      default_root_dir=out.parent, val_every=training.val_every,
                      gradient_clip_val=training.gradient_clip or None)
        if logger is not None:
            begin_run(logger, run_id_file, point.step if point else 0)
        fit.fit(module, data, ckpt_path=str(point.path) if point else None, weights_only=True)
        scores = {**accuracy_and_ld(net, held_out), "steps": fit.global_step}
        if logger is not None:
            _log_final(logger, scores, net)
        scores |= {"train_seconds": time.perf_counter() - start, "family": family, "target_top1": training.target_top1}
        _check_target(scores, family, training.target_top1)
        _save(out, net, tokenizer, scores, layout.run_config(out.name))
        log_model(logger, teacher_artifact(group), out, fit.global_step, {"family": family, "eval": scores})
    finally:
        finish(logger)
    print(f"teacher saved to {out}: held-out top-1 {scores['top1']:.3f} after {scores['steps']} "
          f"steps, LD {scores['logit_diff']:.2f} ({scores['train_seconds']:.0f}s)")
    return scores


TINY = "tiny"
ARTIFACT = "wandb-artifact://"


def resolve_teacher(teacher: str, out: Path, wandb: str = "auto", progress: bool = True) -> str:
    """The teacher as a model `load_lm` reads: `tiny` is the embedded tiny teacher, trained once
    into <out>/teacher (by one process at a time: sweep agents on one machine share it); a W&B
    artifact (`wandb-artifact://entity/project/name:version`) is downloaded once into
    <out>/teachers/; a hub name or folder stays as it is."""
    if teacher == TINY:
        check_out_dir(out)
        folder = RunLayout(out).teacher
        with _locked(Path(out) / ".teacher.lock"):
            if not RunLayout(out).teacher_eval.exists():
                print(f"== training the tiny teacher into {folder}")
                train_teacher(folder, wandb=wandb, wandb_dir=out, progress=progress)
        return str(folder)
    if teacher.startswith(ARTIFACT):
        return _artifact_teacher(teacher[len(ARTIFACT):], Path(out))
    return teacher


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _artifact_teacher(ref: str, out: Path) -> str:
    """Download the model artifact `ref` (entity/project/name:version) into out/teachers/."""
    folder = out / "teachers" / ref.replace("/", "--").replace(":", "--")
    if (folder / "config.json").exists():
        return str(folder)
    import wandb

    try:
        artifact = wandb.Api().artifact(ref)
        with _locked(out / ".teacher.lock"), atomic_dir(folder) as tmp:
            artifact.download(root=str(tmp))
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmechError(f"teacher artifact {ref!r} could not be downloaded from W&B ({first}); expected "
                          f"wandb-artifact://entity/project/name:version of a model folder, with W&B "
                          f"configured") from None
    return str(folder)
