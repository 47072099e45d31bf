"""The synthetic training corpus as a `datasets.Dataset`, served by a LightningDataModule."""

from __future__ import annotations

import lightning as L
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from kdmech.tasks import numerals
from kdmech.tasks.forms import ModelKind, prompt_form


def corpus_dataset(tokenizer, n: int, seed: int, kind: ModelKind = "causal") -> Dataset:
    """`n` numeral sequences, right-padded to one length, each framed as the prompts of its
    model kind are (`PromptForm.wrap`: after a BOS token for causal models, between [CLS] and
    [SEP] for masked ones)."""
    texts = numerals.training_corpus(n, seed)
    form = prompt_form(kind)
    ids = [form.wrap(tokenizer, tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    width = max(map(len, ids))
    # GPT-2's own tokenizer has no pad token: EOS pads (the attention mask hides it either way)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Dataset.from_dict({
        "text": texts,
        "input_ids": [x + [pad] * (width - len(x)) for x in ids],
        "attention_mask": [[1] * len(x) + [0] * (width - len(x)) for x in ids],
    }).with_format("torch", columns=["input_ids", "attention_mask"])


class CorpusDataModule(L.LightningDataModule):
    """Train and validation splits of the synthetic corpus (different seeds)."""

    def __init__(self, tokenizer, n_train: int = 20000, n_val: int = 500,
                 batch_size: int = 64, seed: int = 0, kind: ModelKind = "causal"):
        super().__init__()
        self.tokenizer, self.n_train, self.n_val = tokenizer, n_train, n_val
        self.batch_size, self.seed, self.kind = batch_size, seed, kind

    def setup(self, stage: str | None = None) -> None:
        self.train_set = corpus_dataset(self.tokenizer, self.n_train, self.seed, self.kind)
        self.val_set = corpus_dataset(self.tokenizer, self.n_val, self.seed + 10_000, self.kind)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
