"""Plain language-model training, for the tiny teachers: next-token (GPT-2) or masked (BERT)."""

from __future__ import annotations

import lightning as L
import torch

from kdmech.distill.losses import causal_lm_ce, masked_lm_ce
from kdmech.distill.masking import BertMasker


def adamw_with_warmup(params, lr: float, warmup_steps: int, weight_decay: float = 0.01):
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warm, "interval": "step"}}


class CausalLMModule(L.LightningModule):
    """Next-token cross-entropy on the synthetic corpus."""

    def __init__(self, model, lr: float = 3e-3, warmup_steps: int = 50):
        super().__init__()
        self.model, self.lr, self.warmup_steps = model, lr, warmup_steps

    def _loss(self, batch) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return causal_lm_ce(logits, batch["input_ids"], mask)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/ce", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/ce", self._loss(batch), prog_bar=True)

    def configure_optimizers(self):
        return adamw_with_warmup(self.model.parameters(), self.lr, self.warmup_steps)


class MaskedLMModule(CausalLMModule):
    """BERT's masked-LM objective: 15% of the real tokens chosen (80/10/10), CE at those."""

    def __init__(self, model, masker: BertMasker, lr: float = 3e-3, warmup_steps: int = 50):
        super().__init__(model, lr, warmup_steps)
        self.masker = masker

    def _loss(self, batch) -> torch.Tensor:
        batch = self.masker(batch)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return masked_lm_ce(logits, batch["labels"])
