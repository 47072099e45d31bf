"""`kdmech train-teacher`: a tiny GPT-2 trained on the synthetic numeral corpus."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L

from kdmech.commands.common import atomic_dir, quiet_lightning, trainer
from kdmech.distill import CausalLMModule, CorpusDataModule
from kdmech.models import TinyGPT2Spec, build_word_tokenizer
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.tracking import WandbMode, finish, make_logger

HELD_OUT_SEED = 1234  # numeral prompts never drawn for training or analysis


@dataclass(frozen=True)
class TeacherTraining:
    """Optimisation of the tiny teacher."""

    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    n_train: int = 20000
    """Sequences in the synthetic corpus."""
    seed: int = 0


def train_teacher(out: Path, model: TinyGPT2Spec = TinyGPT2Spec(),
                  training: TeacherTraining = TeacherTraining(), wandb: WandbMode = "auto",
                  wandb_dir: Path | None = None, progress: bool = True) -> dict:
    """Train a tiny GPT-2 teacher and save it (model + tokenizer) to `out`.

    Args:
        out: Folder to write (save_pretrained: safetensors, config, tokenizer, eval.json).
        model: Architecture of the teacher.
        training: Optimisation settings.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        wandb_dir: Where W&B run folders go (default: the parent of `out`).
        progress: Show the progress bar.
    """
    quiet_lightning()
    out = Path(out)
    start = time.perf_counter()
    L.seed_everything(training.seed, verbose=False)
    tokenizer = build_word_tokenizer()
    net = model.build(tokenizer, seed=training.seed)
    data = CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed)
    logger = make_logger(wandb_dir or out.parent, name="teacher", group="teacher", mode=wandb,
                         config={"model": asdict(model), "training": asdict(training)})
    try:
        trainer(training.steps, logger, progress=progress,
                default_root_dir=out.parent).fit(CausalLMModule(net, training.lr, training.warmup_steps), data)
        held_out = tokenize_prompts(NumeralTask(seed=HELD_OUT_SEED).prompts(), tokenizer)
        scores = accuracy_and_ld(net, held_out)
        if logger is not None:
            logger.log_metrics({"teacher/top1_held_out": scores["top1"],
                                "teacher/ld_held_out": scores["logit_diff"]})
    finally:
        finish()
    scores["train_seconds"] = time.perf_counter() - start
    with atomic_dir(out) as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "eval.json").write_text(json.dumps(scores, indent=1))
    print(f"teacher saved to {out}: held-out top-1 {scores['top1']:.3f}, "
          f"LD {scores['logit_diff']:.2f} ({scores['train_seconds']:.0f}s)")
    return scores
