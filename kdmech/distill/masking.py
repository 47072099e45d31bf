"""BERT's masked-LM corruption (Devlin et al. 2019): 15% of the non-special tokens are chosen;
of those 80% become [MASK], 10% a random token, 10% stay. Labels are -100 elsewhere."""

from __future__ import annotations

import torch


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator | None = None, rate: float = 0.15):
    """(corrupted ids, labels). `special` [B, T] is true for [CLS]/[SEP]/padding."""
    ids = input_ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    ids[chosen & (roll < 0.8)] = mask_id
    random_pos = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[random_pos] = torch.randint(0, vocab_size, (int(random_pos.sum()),), generator=generator)
    return ids, labels
