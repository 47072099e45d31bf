"""Several students distilled against one teacher forward pass per batch."""

from __future__ import annotations

import lightning as L
import torch

from kdmech.distill.lm_module import adamw_with_warmup
from kdmech.distill.losses import LossWeights
from kdmech.distill.masking import BertMasker
from kdmech.distill.module import distillation_terms, teacher_outputs


class SharedTeacherModule(L.LightningModule):
    """Trains every student in `students` against a frozen teacher whose logits and hidden
    states are computed once per batch. The students' losses are summed; as they share no
    parameters, each student gets exactly the gradient it would get alone. Teacher handling is
    as in `DistillationModule` (eval, no gradients, not in the optimizer or checkpoints), and
    so is the `masker` of BERT students."""

    strict_loading = False

    def __init__(self, teacher, students: dict, layer_maps: dict[str, list[int]],
                 weights: LossWeights = LossWeights(), lr: float = 1e-3, warmup_steps: int = 50,
                 masker: BertMasker | None = None):
        super().__init__()
        self.masker = masker
        self.teacher = teacher.eval().requires_grad_(False)
        # ModuleDict keys may not hold dots; student names (d0.5-w1-h1) do.
        self.names = {name: name.replace(".", "_") for name in students}
        self.students = torch.nn.ModuleDict({self.names[n]: s for n, s in students.items()})
        self.layer_maps, self.weights = layer_maps, weights
        self.lr, self.warmup_steps = lr, warmup_steps
        d_t = teacher.config.hidden_size
        self.projections = torch.nn.ModuleDict({
            self.names[name]: torch.nn.Linear(s.config.hidden_size, d_t, bias=False)
            for name, s in students.items() if s.config.hidden_size != d_t})

    def student_named(self, name: str):
        return self.students[self.names[name]]

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch, batch_idx):
        if self.masker is not None:  # one corruption for the teacher and every student
            batch = self.masker(batch)
        with torch.no_grad():
            t = teacher_outputs(self.teacher, batch)
        total = 0
        for name, key in self.names.items():
            terms = distillation_terms(self.students[key], t, batch, self.layer_maps[name], self.weights,
                                       self.projections[key] if key in self.projections else None)
            self.log_dict({f"train/{name}/{k}": v for k, v in terms.items()})
            total = total + terms["loss"]
        self.log("train/loss", total, prog_bar=True)
        return total

    def configure_optimizers(self):
        return adamw_with_warmup([p for n, p in self.named_parameters() if not n.startswith("teacher.")],
                                 self.lr, self.warmup_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("teacher.")}
