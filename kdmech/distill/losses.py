"""Distillation losses (docs/method.md §11.1).

L = α_kl·T²·KL(softmax(t/T) ‖ softmax(s/T)) + α_ce·CE(student, labels) + α_cos·(1 − cos).

Hinton et al. (2015), "Distilling the Knowledge in a Neural Network", for the T²-scaled KL;
Sanh et al. (2019), "DistilBERT", for the three-term mix. Hugging Face's Distil* runs used
α_kl 5.0, α_ce 2.0, α_cos 1.0, T 2.0, which are the defaults here. Every term is a mean over
the valid (non-padding) token positions it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdmech.errors import KdmechError


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three distillation terms and the softmax temperature."""

    alpha_kl: float = 5.0
    """Weight of T²·KL(teacher ‖ student) on temperature-softened distributions."""
    alpha_ce: float = 2.0
    """Weight of the student's own language-modelling cross-entropy."""
    alpha_cos: float = 1.0
    """Weight of (1 − cosine) between student and mapped teacher hidden states."""
    temperature: float = 2.0
    """Softmax temperature T."""

    def __post_init__(self):
        if self.temperature <= 0:
            raise KdmechError(f"temperature must be > 0, got {self.temperature}")
        if min(self.alpha_kl, self.alpha_ce, self.alpha_cos) < 0:
            raise KdmechError(f"loss weights must be ≥ 0, got {self}")


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
          temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over positions where `mask` is true.
    Logits [B, T, V]; mask [B, T]."""
    s = F.log_softmax(student_logits[mask] / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[mask] / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return kl.mean() * temperature**2


def causal_lm_ce(student_logits: torch.Tensor, input_ids: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position i predicts token i+1 where both are valid."""
    target_ok = mask[:, 1:] & mask[:, :-1]
    logits = student_logits[:, :-1][target_ok]
    return F.cross_entropy(logits, input_ids[:, 1:][target_ok])


def hidden_cosine(student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor],
                  mask: torch.Tensor, projection: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean over layer pairs of mean over valid positions of 1 − cos(student, teacher).
    The two lists are already aligned by the layer map; `projection` maps a narrower student
    into the teacher's width."""
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError("hidden_cosine needs two equally long, non-empty lists")
    terms = []
    for s, t in zip(student_hidden, teacher_hidden):
        s = s[mask]
        if projection is not None:
            s = projection(s)
        terms.append((1 - F.cosine_similarity(s, t[mask], dim=-1)).mean())
    return torch.stack(terms).mean()


def masked_lm_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-LM cross-entropy: only where `labels` holds the original token (not -100)."""
    chosen = labels != -100
    return F.cross_entropy(student_logits[chosen], labels[chosen])
