"""Each head's value bias b_V, [n_heads, d_head] per layer: what a zero-ablated head still
outputs when the value bias is kept (docs/method.md §12, `AlignmentConventions.value_bias_kept`).

A head's output before W_O is z = pattern · (x W_V + b_V) = pattern · x W_V + b_V, since every
pattern row sums to 1. TransformerLens' weight processing folds b_V·W_O into b_O, so zeroing
`hook_z` there leaves b_V's contribution in place; here the same ablation writes b_V into the
head's slice of `hook_z`. Read per family from the Hugging Face modules (a family whose
attention has no value bias gives zeros).
"""

from __future__ import annotations

import torch

from kdmech.errors import KdmechError


def _gpt2(model) -> list[torch.Tensor]:
    c = model.config
    d, h = c.n_embd, c.n_head
    return [block.attn.c_attn.bias[2 * d:].view(h, d // h) for block in model.transformer.h]


def _bert(model) -> list[torch.Tensor]:
    c = model.config
    h, dh = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    return [layer.attention.self.value.bias.view(h, dh) for layer in model.bert.encoder.layer]


def _llama(model) -> list[torch.Tensor]:
    """Llama-layout decoders: a query head reads its KV group's values (zeros without a
    v_proj bias, e.g. Llama and Mistral; Qwen2 has one)."""
    c = model.config
    h, kv = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    dh = getattr(c, "head_dim", None) or c.hidden_size // h
    out = []
    for layer in model.model.layers:
        bias = layer.self_attn.v_proj.bias
        if bias is None:
            out.append(torch.zeros(h, dh, device=layer.self_attn.v_proj.weight.device))
        else:
            out.append(bias.view(kv, dh).repeat_interleave(h // kv, 0))
    return out


_BY_FAMILY = {"gpt2": _gpt2, "bert": _bert, "llama": _llama}


@torch.no_grad()
def value_biases(model, family: str) -> list[torch.Tensor]:
    """Per layer, each head's value bias [n_heads, d_head] (detached copies)."""
    if family not in _BY_FAMILY:
        raise KdmechError(f"the value bias of a {family!r} model is not known; families: {sorted(_BY_FAMILY)}")
    return [b.detach().clone() for b in _BY_FAMILY[family](model)]
