"""Plain language-model training, for the tiny teachers: next-token (GPT-2) or masked (BERT).

Both log `val/ce` on the held-out corpus and, when given held-out task prompts, `val/top1` and
`val/metric` on them at every validation, so a Trainer can stop once the teacher has learned the
task (Lightning's `EarlyStopping` with a `stopping_threshold`)."""

from __future__ import annotations

import lightning as L
import torch

from kdmech.distill import seeding
from kdmech.distill.losses import causal_lm_ce, masked_lm_ce
from kdmech.distill.masking import BertMasker
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.tasks.prompt_set import PromptSet


def adamw_with_warmup(params, lr: float, warmup_steps: int, weight_decay: float = 0.01):
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warm, "interval": "step"}}


class LanguageModelModule(L.LightningModule):
    """What both objectives share: optimiser, logging, task validation. Subclasses define
    `_loss(batch, key)`."""

    def __init__(self, model, lr: float = 3e-3, warmup_steps: int = 50,
                 held_out: PromptSet | None = None, seed: int = 0):
        super().__init__()
        self.model, self.lr, self.warmup_steps, self.seed = model, lr, warmup_steps, seed
        self.held_out = held_out

    def _loss(self, batch, key: tuple[int, ...] | None = None) -> torch.Tensor:
        """The loss of a batch; `key` names its random stream (see kdmech.distill.seeding)."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, seeding.step_key(self, seeding.TRAIN, self.global_step))
        self.log("train/ce", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/ce", self._loss(batch, seeding.step_key(self, seeding.VALIDATION, batch_idx)), prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.held_out is None:
            return
        scores = accuracy_and_ld(self.model, self.held_out.to(self.device))
        self.log("val/top1", scores["top1"], prog_bar=True)
        self.log("val/metric", scores["logit_diff"])

    def configure_optimizers(self):
        return adamw_with_warmup(self.model.parameters(), self.lr, self.warmup_steps)


class CausalLMModule(LanguageModelModule):
    """Next-token cross-entropy on the synthetic corpus."""

    def _loss(self, batch, key=None) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return causal_lm_ce(logits, batch["input_ids"], mask)


class MaskedLMModule(LanguageModelModule):
    """BERT's masked-LM objective: 15% of the real tokens chosen (80/10/10), CE at those."""

    def __init__(self, model, masker: BertMasker, lr: float = 3e-3, warmup_steps: int = 50,
                 held_out: PromptSet | None = None, seed: int = 0):
        super().__init__(model, lr, warmup_steps, held_out, seed)
        self.masker = masker

    def _loss(self, batch, key=None) -> torch.Tensor:
        batch = self.masker(batch, key)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return masked_lm_ce(logits, batch["labels"])
