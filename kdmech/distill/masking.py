"""BERT's masked-LM corruption (Devlin et al. 2019): 15% of the non-special tokens are chosen;
of those 80% become [MASK], 10% a random token, 10% stay. Labels are -100 elsewhere."""

from __future__ import annotations

import torch

from kdmech.distill import seeding


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator | None = None, rate: float = 0.15):
    """(corrupted ids, labels). `special` [B, T] is true for [CLS]/[SEP]/padding."""
    ids = input_ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator, device=ids.device) < rate) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(ids.shape, generator=generator, device=ids.device)
    ids[chosen & (roll < 0.8)] = mask_id
    random_pos = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[random_pos] = torch.randint(0, vocab_size, (int(random_pos.sum()),), generator=generator,
                                    device=ids.device)
    return ids, labels


class BertMasker:
    """Corrupts a batch once ({input_ids, attention_mask} → + labels) with `mask_tokens`;
    [CLS], [SEP] and padding are never chosen. One masker per training run, so teacher and
    students read the same corrupted tokens.

    Called with a `key` (e.g. (seeding.TRAIN, step, rank)), the corruption is a function of
    (seed, key) alone, so a resumed run masks each step as an uninterrupted one does; without
    one it draws from the masker's own running generator."""

    def __init__(self, tokenizer, vocab_size: int, seed: int = 0):
        self.special_ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
        self.mask_id, self.vocab_size, self.seed = tokenizer.mask_token_id, vocab_size, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict, key: tuple[int, ...] | None = None) -> dict:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        special = (attn == 0) | torch.isin(ids, torch.tensor(self.special_ids, device=ids.device))
        gen = self.generator if key is None else seeding.generator(self.seed, *key)
        corrupted, labels = mask_tokens(ids.cpu(), special.cpu(), self.mask_id, self.vocab_size, gen)
        return {**batch, "input_ids": corrupted.to(ids.device), "labels": labels.to(ids.device)}


MASKERS: dict[str, type] = {"bert": BertMasker}
"""Family name → the masker class of a masked LM's training batches; causal families have none."""


def make_masker(family, tokenizer, vocab_size: int, seed: int = 0):
    """The training-batch masker of a masked-LM family (a `ModelFamily` or its name); None for
    a causal one."""
    masker = MASKERS.get(getattr(family, "name", family))
    return masker(tokenizer, vocab_size, seed) if masker else None
