"""Wrapping Hugging Face models in TransformerLens' TransformerBridge.

The bridge rewires the modules of the model it is given, in place. Analysis must never change
a model that is still training, so `boot` wraps a deep copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property

import torch
from transformer_lens.model_bridge import TransformerBridge

from kdmech.analysis.nodes import Node, all_nodes
from kdmech.models.family import ModelFamily, family_of


@dataclass
class Bridged:
    """A bridge plus the facts analyses need about it."""

    bridge: TransformerBridge
    n_layers: int
    n_heads: int
    d_model: int
    model: object = None
    """The Hugging Face model the bridge was booted from (not the wrapped copy)."""

    @cached_property
    def family(self) -> ModelFamily:
        """The model's family: what it can do and how the bridge is driven for it."""
        return family_of(self.model)

    def forward_kwargs(self, ids: torch.Tensor) -> dict:
        """The attention mask, for families whose bridge matches Hugging Face only with it (BERT)."""
        return {"attention_mask": torch.ones_like(ids)} if self.family.bridge_attention_mask else {}

    @property
    def nodes(self) -> list[Node]:
        return all_nodes(self.n_layers, self.n_heads)


def boot(model, tokenizer) -> Bridged:
    """A TransformerBridge over a frozen copy of `model` (CPU or the model's device)."""
    clone = copy.deepcopy(model).eval().requires_grad_(False)
    device = next(clone.parameters()).device
    bridge = TransformerBridge.boot_transformers(
        clone.config.model_type, hf_model=clone, tokenizer=tokenizer, device=str(device))
    cfg = clone.config
    return Bridged(bridge, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, model)


@torch.no_grad()
def logits_at(bridged: Bridged, ids: torch.Tensor, positions: torch.Tensor,
              hooks=(), batch_size: int = 64) -> torch.Tensor:
    """Logits [N, V] at each prompt's prediction position, batched so the full [N, T, V]
    logits of a large vocabulary never sit in memory at once."""
    out = []
    for i in range(0, ids.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        batch_hooks = [(name, fn(sl)) for name, fn in hooks]
        logits = bridged.bridge.run_with_hooks(ids[sl], fwd_hooks=batch_hooks,
                                               **bridged.forward_kwargs(ids[sl]))
        out.append(logits[torch.arange(logits.shape[0], device=logits.device), positions[sl]])
    return torch.cat(out)
