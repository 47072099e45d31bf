"""The registry of attribution adapters, keyed by model-family name (`adapter.register_adapter`).

A family without an adapter has attribution refused (exact discovery still runs). Adding a
family's adapter is one line below.
"""

from __future__ import annotations

import copy

import torch

from kdmech.analysis.attribution import bert_adapter, gpt2_adapter, llama_adapter
from kdmech.analysis.attribution.adapter import ADAPTERS, AttributionAdapter, register_adapter
from kdmech.errors import KdmechError

register_adapter("gpt2", gpt2_adapter.make)
register_adapter("bert", bert_adapter.make)
register_adapter("llama", llama_adapter.make)


def adapter_for(family: str, model, dtype: torch.dtype = torch.float32) -> AttributionAdapter:
    """The family's adapter over a frozen eval copy of `model` in `dtype` (its weights never
    receive gradients); a `KdmechError` when the family or its config has none."""
    factory = ADAPTERS.get(family)
    copied = copy.deepcopy(model).eval().requires_grad_(False).to(dtype)
    adapter = factory(copied) if factory else None
    if adapter is None:
        raise KdmechError(f"gradient attribution is not available for the {family} family (or this "
                          f"model's config); accepted families: {sorted(ADAPTERS)}; use "
                          f"--analysis.discovery exact")
    return adapter
