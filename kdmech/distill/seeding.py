"""Randomness as a pure function of (seed, what, step): nothing a resumed run needs is carried in
a generator's memory, so a run resumed from a checkpoint at step k draws exactly what an
uninterrupted one draws from step k on (the batch order is handled by `StepSampler`)."""

from __future__ import annotations

import numpy as np
import torch

TRAIN, VALIDATION, DROPOUT = 0, 1, 2
"""The streams: training-batch masking, validation-batch masking, the global RNG (dropout)."""


def step_seed(seed: int, *key: int) -> int:
    """A 63-bit seed for the stream `key` (e.g. TRAIN, step, rank) of a run seeded `seed`;
    numpy's SeedSequence keeps distinct keys independent."""
    entropy = [int(k) % 2**64 for k in (seed, *key)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for the stream `key` of a run seeded `seed`."""
    return torch.Generator().manual_seed(step_seed(seed, *key))


def step_key(module, stream: int, index: int) -> tuple[int, ...] | None:
    """The random stream of a LightningModule's step (`stream` TRAIN: optimizer step `index`;
    VALIDATION: validation batch `index`) on its process. For a training step, torch's global
    RNG (dropout) is reseeded from (module.seed, step, rank) too. A module used by hand, with
    no Trainer, has no step: None (its masker draws from its own generator)."""
    if getattr(module, "_trainer", None) is None:
        return None
    key = (stream, index, module.global_rank)
    if stream == TRAIN:
        torch.manual_seed(step_seed(module.seed, DROPOUT, index, module.global_rank))
    return key
