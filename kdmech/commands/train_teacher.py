"""`kdmech train-teacher`: a tiny GPT-2 (next-token) or BERT (masked-LM) trained on the synthetic
numeral corpus."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import lightning as L

from kdmech.commands.common import atomic_dir, quiet_lightning, trainer
from kdmech.distill import BertMasker, CausalLMModule, CorpusDataModule, MaskedLMModule
from kdmech.models import TinySpec, build_word_tokenizer, tiny_spec
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
    lr: float | None = None
    """Peak learning rate; default 3e-3 for GPT-2, 1e-3 for BERT (post-LayerNorm, less stable)."""
    warmup_steps: int = 100
    n_train: int = 20000
    """Sequences in the synthetic corpus."""
    seed: int = 0


def train_teacher(out: Path, model: TinySpec = TinySpec(),
                  training: TeacherTraining = TeacherTraining(), wandb: WandbMode = "auto",
                  wandb_dir: Path | None = None, progress: bool = True,
                  family: Literal["gpt2", "bert"] = "gpt2") -> dict:
    """Train a tiny GPT-2 or BERT teacher and save it (model + tokenizer) to `out`.

    Args:
        out: Folder to write (save_pretrained: safetensors, config, tokenizer, eval.json).
        model: Sizes of the teacher (either family).
        training: Optimisation settings.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        wandb_dir: Where W&B run folders go (default: the parent of `out`).
        progress: Show the progress bar.
        family: gpt2 (next-token prediction) or bert (masked LM, 15% with 80/10/10, evaluated
            on cloze numerals with starts 1..8, read at [MASK]).
    """
    quiet_lightning()
    out = Path(out)
    start = time.perf_counter()
    L.seed_everything(training.seed, verbose=False)
    tokenizer = build_word_tokenizer()
    masked = family == "bert"
    lr = training.lr if training.lr is not None else (1e-3 if masked else 3e-3)
    net = tiny_spec(family, model).build(tokenizer, seed=training.seed)
    kind = "masked" if masked else "causal"
    data = CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed, kind)
    if masked:
        module = MaskedLMModule(net, BertMasker(tokenizer, net.config.vocab_size, training.seed),
                                lr, training.warmup_steps)
    else:
        module = CausalLMModule(net, lr, training.warmup_steps)
    logger = make_logger(wandb_dir or out.parent, name="teacher", group="teacher", mode=wandb,
                         config={"family": family, "model": asdict(model), "training": asdict(training)})
    try:
        trainer(training.steps, logger, progress=progress, default_root_dir=out.parent).fit(module, data)
        # BERT: the cloze form with starts 1..8 kept (renumbered, the answer would always be 5)
        task = NumeralTask(seed=HELD_OUT_SEED, cloze=masked, renumber=False)
        held_out = tokenize_prompts(task.prompts(), tokenizer, kind)
        scores = accuracy_and_ld(net, held_out)
        if logger is not None:
            logger.log_metrics({"teacher/top1_held_out": scores["top1"],
                                "teacher/ld_held_out": scores["logit_diff"]})
    finally:
        finish()
    scores["train_seconds"] = time.perf_counter() - start
    scores["family"] = family
    with atomic_dir(out) as tmp:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "eval.json").write_text(json.dumps(scores, indent=1))
    print(f"teacher saved to {out}: held-out top-1 {scores['top1']:.3f}, "
          f"LD {scores['logit_diff']:.2f} ({scores['train_seconds']:.0f}s)")
    return scores
