"""Masked-LM distillation for BERT students (SPEC §11): the batch is corrupted once with BERT's
80/10/10 masking; teacher and student read the same corrupted tokens; T²·KL and the MLM
cross-entropy are taken at the masked positions, the hidden cosine at every real token."""

from __future__ import annotations

import torch

from kdmech.distill.losses import LossWeights, hidden_cosine, kd_kl, masked_lm_ce
from kdmech.distill.masking import mask_tokens
from kdmech.distill.module import DistillationModule


class MaskedDistillationModule(DistillationModule):
    def __init__(self, teacher, student, layer_map: list[int], special_ids: list[int], mask_id: int,
                 weights: LossWeights = LossWeights(), lr: float = 1e-3, warmup_steps: int = 50,
                 seed: int = 0):
        super().__init__(teacher, student, layer_map, weights, lr, warmup_steps)
        self.special_ids, self.mask_id = list(special_ids), mask_id
        self.generator = torch.Generator().manual_seed(seed)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        special = (attn == 0) | torch.isin(ids, torch.tensor(self.special_ids, device=ids.device))
        corrupted, labels = mask_tokens(ids.cpu(), special.cpu(), self.mask_id,
                                        self.student.config.vocab_size, self.generator)
        corrupted, labels = corrupted.to(ids.device), labels.to(ids.device)
        with torch.no_grad():
            t = self.teacher(input_ids=corrupted, attention_mask=attn, output_hidden_states=True)
        s = self.student(input_ids=corrupted, attention_mask=attn, output_hidden_states=True)
        masked, valid = labels != -100, attn.bool()
        w = self.weights
        out = {"kl": kd_kl(s.logits, t.logits, masked, w.temperature),
               "ce": masked_lm_ce(s.logits, labels),
               "cos": hidden_cosine([s.hidden_states[i + 1] for i in range(len(self.layer_map))],
                                    [t.hidden_states[j + 1] for j in self.layer_map], valid,
                                    self.projection)}
        out["loss"] = w.alpha_kl * out["kl"] + w.alpha_ce * out["ce"] + w.alpha_cos * out["cos"]
        return out
