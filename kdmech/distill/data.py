"""The synthetic training corpus as a `datasets.Dataset`, served by a LightningDataModule whose
training batches are a pure function of (seed, step): a run resumed from a checkpoint at step k
(`--resume`) sees exactly the batches an uninterrupted run sees from step k on."""

from __future__ import annotations

import math

import lightning as L
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

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


def epoch_permutation(n: int, seed: int, epoch: int, partial_last_batch: bool) -> list[int]:
    """The order of the `n` examples in `epoch`, a function of (seed, epoch) alone.

    It is the order a `DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))`
    gives under Lightning, so fresh runs keep the batches they had before resuming was exact:
    each epoch draws the loader's base seed and a permutation from the one generator, and, when
    the last batch is partial (the sampler is run to its end), one more, unused permutation."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(epoch + 1):
        torch.empty((), dtype=torch.int64).random_(generator=g)
        order = torch.randperm(n, generator=g)
        if partial_last_batch:
            torch.randperm(n, generator=g)
    return order.tolist()


class StepSampler(DistributedSampler):
    """Shuffled indices, one permutation per epoch (`epoch_permutation`), split across
    `num_replicas` processes as `DistributedSampler` splits them (so Lightning keeps it under
    DDP instead of injecting its own), starting `start` batches into the stream: the batch of
    optimizer step k is the same whether the run got there in one go or was resumed at any
    checkpoint before it. `len()` is a whole epoch; the resumed epoch yields only its rest, as
    Lightning expects of a resumable loader (it counts the batches already done).

    With gradient accumulation (`accumulate` > 1) an epoch is rounded up to whole optimizer
    steps of full batches (the permutation wraps around, as DistributedSampler pads): every
    optimizer step then takes `accumulate` batches, so batch counts (Lightning's
    val_check_interval) and optimizer steps stay in proportion across epochs, and the batch of
    step k is where a resumed run looks for it."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, start: int = 0, accumulate: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.accumulate = batch_size, accumulate
        self.batches_per_epoch = math.ceil(self.num_samples / batch_size)
        if accumulate > 1:
            self.batches_per_epoch = math.ceil(self.batches_per_epoch / accumulate) * accumulate
        self.start_epoch, self.skip = divmod(start, self.batches_per_epoch)
        self.epoch = self.start_epoch

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size if self.accumulate > 1 else self.num_samples

    def __iter__(self):
        n = len(self.dataset)
        order = epoch_permutation(n, self.seed, self.epoch, self.num_samples % self.batch_size != 0)
        order += (order * math.ceil(self.total_size / n))[: self.total_size - n]  # pad as DistributedSampler
        mine = order[self.rank: self.total_size: self.num_replicas]
        if self.accumulate > 1:
            need = self.batches_per_epoch * self.batch_size
            mine = (mine * math.ceil(need / len(mine)))[:need]
        if self.epoch == self.start_epoch:
            mine = mine[self.skip * self.batch_size:]
        return iter(mine)


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning recognises as resumable (`state_dict`/`load_state_dict`).
    Its position needs no saving: `CorpusDataModule` rebuilds it from the restored global step,
    so the state only records what the order depends on."""

    def state_dict(self) -> dict:
        s = self.sampler
        return {"order": "epoch_permutation", "seed": s.seed, "examples": len(s.dataset),
                "batch_size": s.batch_size, "num_replicas": s.num_replicas, "accumulate": s.accumulate}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: the sampler already starts at the restored global step."""


class CorpusDataModule(L.LightningDataModule):
    """Train and validation splits of the synthetic corpus (different seeds). The training
    loader starts at the trainer's (restored) global step, so a resumed run continues the
    exact batch sequence of an uninterrupted one."""

    def __init__(self, tokenizer, n_train: int = 20000, n_val: int = 500,
                 batch_size: int = 64, seed: int = 0, kind: ModelKind = "causal"):
        super().__init__()
        self.tokenizer, self.n_train, self.n_val = tokenizer, n_train, n_val
        self.batch_size, self.seed, self.kind = batch_size, seed, kind

    def setup(self, stage: str | None = None) -> None:
        self.train_set = corpus_dataset(self.tokenizer, self.n_train, self.seed, self.kind)
        self.val_set = corpus_dataset(self.tokenizer, self.n_val, self.seed + 10_000, self.kind)

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        # Lightning restores global_step from a checkpoint before it asks for the loaders.
        accumulate = t.accumulate_grad_batches if t is not None else 1
        start = t.global_step * accumulate if t is not None else 0
        replicas, rank = (t.world_size, t.global_rank) if t is not None else (1, 0)
        sampler = StepSampler(self.train_set, self.batch_size, self.seed, replicas, rank, start, accumulate)
        return ResumableLoader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                               generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
