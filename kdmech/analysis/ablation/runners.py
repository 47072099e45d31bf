"""The registry of fast ablation runners, keyed by model-family name (docs/method.md §3.1).

A family needs no runner: without one the engine uses the bridge reference. A registered
factory takes `(model, clean ids, batch_rows)` and returns a runner obeying `contract.Runner`
(or `ResidualRunner`), or None when the model's config is outside what it reproduces exactly;
`batch_rows` bounds its forwards' prompt rows (None: all at once). Registering a family's
runner is one line below.
"""

from __future__ import annotations

from typing import Callable

import torch

from kdmech.analysis.ablation import bert_runner, gpt2_runner, llama_runner

RunnerFactory = Callable[[torch.nn.Module, torch.Tensor, "int | None"], object]

RUNNERS: dict[str, RunnerFactory] = {}


def register_runner(family: str, factory: RunnerFactory) -> None:
    RUNNERS[family] = factory


def runner_for(family: str, model, clean: torch.Tensor, batch_rows: int | None = None):
    """The family's fast runner over `model` and the clean ids, or None (no runner for the
    family, or the model's config is outside it)."""
    factory = RUNNERS.get(family)
    return factory(model, clean, batch_rows) if factory else None


register_runner("gpt2", gpt2_runner.make)
register_runner("bert", bert_runner.make)
register_runner("llama", llama_runner.make)
