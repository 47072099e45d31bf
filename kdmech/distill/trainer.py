"""The Lightning plumbing of every training command: Trainer defaults, checkpoints that resume
exactly, quiet Lightning."""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from kdmech.distill.progress import StepProgressBar
from kdmech.errors import KdmechError
from kdmech.run_layout import LAST_CKPT, PREVIOUS_CKPT


def quiet_lightning() -> None:
    """Keep the console to progress bars and kdmech's own lines."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", r".*module\(s\) in eval mode.*")  # the frozen teacher
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*no `validation_step`.*")  # distill-shared trains only
    warnings.filterwarnings("ignore", ".*isinstance.*treespec.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)


Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
Devices = int | list[int] | Literal["auto"]
"""Lightning's devices: a count, the indices of the devices to use, or auto (all there are)."""


@dataclass(frozen=True)
class TrainerOptions:
    """Controls of the Lightning Trainer."""

    precision: Precision = "32-true"
    """Training precision: 32-true, bf16-mixed (CPUs and recent GPUs) or 16-mixed (GPUs;
    Lightning turns it into bf16-mixed on a CPU). Checkpoint analyses run in fp32 whatever the
    training precision (autocast covers the training and validation steps only)."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed into one optimizer step (steps count optimizer steps)."""
    gradient_clip_val: float | None = None
    """Clip the gradients' global norm to this value (default: no clipping)."""
    val_check_interval: int | None = None
    """Validate on the held-out split every N optimizer steps (default: at every checkpoint)."""
    checkpoint_every_n_steps: int | None = None
    """Write the resumable checkpoint every N optimizer steps (default: at every analysis step,
    analysis.every_n_steps, or every 100 steps when analyses are off)."""

    def __post_init__(self):
        if self.accumulate_grad_batches < 1:
            raise KdmechError(f"trainer.accumulate_grad_batches must be ≥ 1, got {self.accumulate_grad_batches}")
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise KdmechError(f"trainer.gradient_clip_val must be > 0, got {self.gradient_clip_val}")
        for name in ("val_check_interval", "checkpoint_every_n_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise KdmechError(f"trainer.{name} must be ≥ 1 (optimizer steps), got {value}")

    def cadences(self, default: int) -> tuple[int, int, int]:
        """(validation, checkpoint, trainer tick) in optimizer steps: the checkpoint cadence
        defaults to `default`, validation to the checkpoint's; the trainer's validation loop
        runs at every tick (their gcd), and each does its own work at its own multiples."""
        ckpt = self.checkpoint_every_n_steps or default
        val = self.val_check_interval or ckpt
        return val, ckpt, gcd(val, ckpt)


def trainer(max_steps: int, logger=None, callbacks=(), strategy: str = "auto", devices: Devices = 1,
            default_root_dir: str | Path | None = None, progress: bool = True,
            val_every: int | None = None, accelerator: str = "auto", num_nodes: int = 1,
            gradient_clip_val: float | None = None, precision: Precision = "32-true",
            accumulate_grad_batches: int = 1) -> L.Trainer:
    """The Trainer of every command. `val_every` is in optimizer steps: Lightning counts its
    val_check_interval in batches, so it gets `val_every × accumulate_grad_batches`."""
    if val_every:
        val_every *= accumulate_grad_batches
    return L.Trainer(max_steps=max_steps, accelerator=accelerator, strategy=strategy, devices=devices,
                     num_nodes=num_nodes, precision=precision, accumulate_grad_batches=accumulate_grad_batches,
                     logger=logger if logger is not None else False,
                     callbacks=[*callbacks, *([StepProgressBar()] if progress else [])],
                     enable_model_summary=False, enable_progress_bar=progress,
                     enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint)
                                              for c in callbacks),
                     default_root_dir=default_root_dir, log_every_n_steps=10,
                     val_check_interval=val_every, check_val_every_n_epoch=None if val_every else 1,
                     num_sanity_val_steps=0, gradient_clip_val=gradient_clip_val)


LAST, PREVIOUS = LAST_CKPT, PREVIOUS_CKPT


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writing `last.ckpt` at the end of every validation (run the
    trainer with `val_every` = the checkpoint cadence): there everything the step logs
    (analyses, train and validation metrics) has been logged, and a resumed run logs none of it
    again. The one before is kept as `previous.ckpt`: Lightning writes a checkpoint atomically,
    and should one still read back damaged (a copy cut short, a full disk), `resume_point`
    falls back to it. `last.ckpt` always names the newest checkpoint (no last-v1.ckpt beside a
    stale one)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int = 1):
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False,
                         save_on_train_epoch_end=False)
        self.every_n_steps = every_n_steps
        """Save only at validations whose global step is a multiple of this (1: at every one)."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step % self.every_n_steps == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """No checkpoint at the end of training (Lightning's fallback when none was written):
        there Lightning counts a cut-short epoch as finished, and a run resumed from it would
        start the next epoch's batches early. The last validation's checkpoint resumes exactly."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        path = Path(filepath)
        if trainer.is_global_zero and path.name == LAST and path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        super()._save_checkpoint(trainer, filepath)


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    step: int
    """The checkpoint's global step: training (and its W&B history) continue from here."""


def _checkpoint_step(path: Path) -> int:
    """The global step of a checkpoint that reads back whole (every member's CRC checked)."""
    import torch

    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"{bad} fails its checksum")
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["global_step"])


def resume_point(folder: Path) -> ResumePoint | None:
    """Where `--resume` continues: `last.ckpt` in `folder`, or `previous.ckpt` when the last one
    is damaged (the damaged file is removed, so the next checkpoint cannot rotate it into
    place); None when there is no checkpoint. Nothing readable: one-line KdmechError."""
    present = [folder / name for name in (LAST, PREVIOUS) if (folder / name).exists()]
    problems = []
    for path in present:
        try:
            step = _checkpoint_step(path)
        except Exception as e:  # noqa: BLE001 - any failure to read back means damaged
            problems.append(f"{path.name}: {' '.join(str(e).split())[:120] or type(e).__name__}")
            continue
        if path.name != LAST and (folder / LAST).exists():
            (folder / LAST).unlink(missing_ok=True)
            print(f"kdmech: {folder / LAST} was damaged ({problems[0]}); resuming from {path.name} "
                  f"at step {step}")
        return ResumePoint(path, step)
    if problems:
        raise KdmechError(f"no checkpoint in {folder} reads back whole ({'; '.join(problems)}); "
                          f"move that folder aside and run without --resume to start over")
    return None
