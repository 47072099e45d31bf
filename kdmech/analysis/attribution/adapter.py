"""Where a family's attribution points are (docs/method.md §5.5): the adapter contract and its registry.

An adapter wraps a frozen eval copy of a Hugging Face model and names, by module, where the
nodes' outputs and the receivers' inputs are, so that one forward of the model itself (its
own modules, hooks added) carries the attribution:

- node outputs: a head's output before its output projection (the input of `z_module(l)`,
  heads concatenated in head order), an MLP's output (the output of `mlp_module(l)`);
- `logits_at(ids, positions)`: the model's logits at the prediction positions [n, V];
- for families whose residual stream is additive (`edges` true), the receiver inputs:
  `attention_receivers(l)` lists a layer's q/k/v inputs (k and v one per KV group under
  grouped-query attention) and `hook_attention_inputs(l, leaf)` makes input r read its
  norm of (residual + leaf[:, :, r]); `hook_mlp_input` and `hook_final_input` do the same for
  an MLP's input and the final residual; `head_writes(l, dz)` maps a change of the heads'
  outputs [.., H·d_head] to each head's residual write [.., H, d] (no bias).

A new family is one file with these methods (`gpt2_adapter`, `bert_adapter`, `llama_adapter`:
grouped-query attention, RMSNorm) and one `register_adapter` line in `adapters.py`.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from kdmech.analysis.edges import Receiver


class AttributionAdapter(Protocol):
    model: torch.nn.Module
    n_layers: int
    n_heads: int
    d_head: int
    edges: bool
    """Receiver inputs are offered (additive residual stream); False: nodes only."""

    def z_module(self, layer: int) -> torch.nn.Module:
        """The module whose (first) input is the layer's head outputs before W_O [B, T, H·d_head]."""

    def mlp_module(self, layer: int) -> torch.nn.Module:
        """The module whose output is the layer's MLP output [B, T, d]."""

    def logits_at(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The model's logits at each prompt's position [n, V] (differentiable)."""

    def attention_receivers(self, layer: int) -> list[Receiver]:
        """The layer's attention inputs in the order of `hook_attention_inputs`' leaf."""

    def hook_attention_inputs(self, layer: int, leaf: torch.Tensor) -> list:
        """Hooks after which attention input r of `layer` reads residual + leaf[:, :, r]."""

    def hook_mlp_input(self, layer: int, leaf: torch.Tensor) -> list:
        """Hooks after which the layer's MLP reads its norm of (residual + leaf)."""

    def hook_final_input(self, leaf: torch.Tensor) -> list:
        """Hooks after which the final norm reads residual + leaf."""

    def head_writes(self, layer: int, dz: torch.Tensor) -> torch.Tensor:
        """Each head's residual write of a change dz [B, T, H·d_head] of the heads' outputs: [B, T, H, d]."""


AdapterFactory = Callable[[torch.nn.Module], "AttributionAdapter | None"]
"""(an eval copy of a model) → its adapter, or None when the config is outside it."""

ADAPTERS: dict[str, AdapterFactory] = {}


def register_adapter(family: str, factory: AdapterFactory) -> None:
    ADAPTERS[family] = factory


def pre_hook_adding(module: torch.nn.Module, leaf: torch.Tensor):
    """A forward pre-hook handle: `module` reads its input + leaf."""
    return module.register_forward_pre_hook(lambda m, args: (args[0] + leaf, *args[1:]))
