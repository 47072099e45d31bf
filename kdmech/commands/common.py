"""Pieces the commands share: Trainer defaults, atomic output folders, quiet Lightning."""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path

import lightning as L


def quiet_lightning() -> None:
    """Keep the console to progress bars and kdmech's own lines."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*module\(s\) in eval mode.*")  # the frozen teacher
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*no `validation_step`.*")  # distill-shared trains only
    warnings.filterwarnings("ignore", ".*isinstance.*treespec.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)


def trainer(max_steps: int, logger=None, callbacks=(), strategy: str = "auto", devices: int = 1,
            default_root_dir: str | Path | None = None, progress: bool = True,
            val_every: int | None = None, accelerator: str = "auto", num_nodes: int = 1,
            gradient_clip_val: float | None = None) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator=accelerator, strategy=strategy, devices=devices,
                     num_nodes=num_nodes,
                     logger=logger if logger is not None else False, callbacks=list(callbacks),
                     enable_model_summary=False, enable_progress_bar=progress,
                     enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint)
                                              for c in callbacks),
                     default_root_dir=default_root_dir, log_every_n_steps=10,
                     val_check_interval=val_every, check_val_every_n_epoch=None if val_every else 1,
                     num_sanity_val_steps=0, gradient_clip_val=gradient_clip_val)


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Write into `final.tmp`, then swap it into place: a failure leaves no half folder, and a
    crash during the swap loses nothing (the old folder is renamed aside first, `final.old`,
    and removed only once the new one is in place)."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():  # an earlier swap was cut off: bring it back
        old.rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
