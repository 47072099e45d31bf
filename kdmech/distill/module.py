"""Distillation of one student from a frozen teacher (SPEC §11).

Causal LMs: KL and CE (next token) at every real position. Masked LMs: the batch is corrupted
once by a `BertMasker` (15%, 80/10/10), teacher and student read the same corrupted tokens,
and KL and the MLM CE are taken at the masked positions; the hidden cosine is at every real
token in both cases."""

from __future__ import annotations

import lightning as L
import torch

from kdmech.distill.lm_module import adamw_with_warmup
from kdmech.distill.masking import BertMasker
from kdmech.distill.losses import LossWeights, causal_lm_ce, hidden_cosine, kd_kl, masked_lm_ce


def teacher_outputs(teacher, batch):
    return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True)


def distillation_terms(student, t, batch, layer_map: list[int], w: LossWeights,
                       projection=None) -> dict[str, torch.Tensor]:
    """The three loss terms and their weighted sum for one student, given the teacher's
    outputs `t` on the same batch (computed once, however many students share them). A batch
    with "labels" is a masked-LM batch: KL and CE at the masked positions."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    mask = attn.bool()
    s = student(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    if "labels" in batch:
        kl_at, ce = batch["labels"] != -100, masked_lm_ce(s.logits, batch["labels"])
    else:
        kl_at, ce = mask, causal_lm_ce(s.logits, ids, mask)
    # hidden_states[0] is the embedding output and hidden_states[i + 1] block i's output (HF
    # applies the final LayerNorm to the last one). every_k maps last layer to last layer,
    # so both sides of that pair are post-LayerNorm.
    out = {
        "kl": kd_kl(s.logits, t.logits, kl_at, w.temperature),
        "ce": ce,
        "cos": hidden_cosine([s.hidden_states[i + 1] for i in range(len(layer_map))],
                             [t.hidden_states[j + 1] for j in layer_map], mask, projection),
    }
    out["loss"] = w.alpha_kl * out["kl"] + w.alpha_ce * out["ce"] + w.alpha_cos * out["cos"]
    return out


class DistillationModule(L.LightningModule):
    """Trains `student` against a frozen `teacher`.

    The teacher is in eval mode, has no gradients, is not in the optimizer and is left out
    of checkpoints (it is reloaded from its own folder). `layer_map[i]` is the teacher layer
    whose output student layer i is pulled towards by the cosine term; a learned projection
    bridges a narrower student (it is trained with the student and saved in checkpoints).
    With a `masker` (BERT students) every batch is corrupted once before both forwards.
    """

    strict_loading = False  # checkpoints hold no teacher weights

    def __init__(self, teacher, student, layer_map: list[int],
                 weights: LossWeights = LossWeights(), lr: float = 1e-3, warmup_steps: int = 50,
                 masker: BertMasker | None = None):
        super().__init__()
        self.teacher, self.student, self.masker = teacher, student, masker
        self.teacher.eval().requires_grad_(False)
        self.layer_map, self.weights = list(layer_map), weights
        self.lr, self.warmup_steps = lr, warmup_steps
        d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
        self.projection = torch.nn.Linear(d_s, d_t, bias=False) if d_s != d_t else None

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # dropout and friends stay off in the teacher
        return self

    def losses(self, batch) -> dict[str, torch.Tensor]:
        if self.masker is not None:
            batch = self.masker(batch)
        with torch.no_grad():
            t = teacher_outputs(self.teacher, batch)
        return distillation_terms(self.student, t, batch, self.layer_map, self.weights, self.projection)

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        terms = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, sync_dist=True)

    def configure_optimizers(self):
        params = list(self.student.parameters())
        if self.projection is not None:
            params += list(self.projection.parameters())
        return adamw_with_warmup(params, self.lr, self.warmup_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("teacher.")}
