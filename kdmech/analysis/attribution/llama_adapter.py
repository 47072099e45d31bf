"""The Llama family's attribution points (`adapter.AttributionAdapter`): Llama, Mistral, Qwen2 and
Qwen3 causal LMs, grouped-query attention included.

Nodes are where the exact ablation replaces them (`ablation.llama_runner`): a query head's output
is its slice of `self_attn.o_proj`'s input (query heads in order), an MLP's output the output of
`mlp`. Receivers:

- the q input of each query head: its columns of `q_proj`'s output, recomputed from
  input_layernorm(residual + leaf);
- the k and v inputs of each KV group (one receiver per group, read by all its query heads
  through transformers' `repeat_kv`; per head without GQA): the group's columns of
  `k_proj`/`v_proj`'s outputs, recomputed the same way. Rotary embeddings, Qwen3's q/k norms and
  the attention itself act on those outputs afterwards, as in the plain forward;
- an MLP's input (post_attention_layernorm reads residual + leaf) and the final residual
  (`model.norm` reads residual + leaf).

The gradient at a KV group's k receiver is the sum of what each query head of the group would
receive from its own copy of k: one group edge equals the per-query-head edges summed over the
group (tests/test_attribution_llama.py checks it against an equivalent model without GQA).
"""

from __future__ import annotations

import torch

from kdmech.analysis.attribution.adapter import pre_hook_adding
from kdmech.analysis.edges import Receiver


class LlamaAdapter:
    edges = True

    def __init__(self, model):
        self.model = model
        c = model.config
        self.layers = model.model.layers
        self.n_layers, self.n_heads, self.d = len(self.layers), c.num_attention_heads, c.hidden_size
        self.n_kv = getattr(c, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(c, "head_dim", None) or self.d // self.n_heads
        self.gqa = self.n_kv < self.n_heads

    def z_module(self, layer: int):
        return self.layers[layer].self_attn.o_proj

    def mlp_module(self, layer: int):
        return self.layers[layer].mlp

    def logits_at(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.model.model(input_ids=ids, use_cache=False).last_hidden_state
        return self.model.lm_head(h[torch.arange(ids.shape[0], device=ids.device), positions])

    def attention_receivers(self, layer: int) -> list[Receiver]:
        """q of each query head, then k of each KV group, then v of each KV group."""
        q = [Receiver(layer, "q", h) for h in range(self.n_heads)]
        return q + [Receiver(layer, port, g, group=self.gqa) for port in "kv" for g in range(self.n_kv)]

    def hook_attention_inputs(self, layer: int, leaf: torch.Tensor) -> list:
        """q_proj's (k_proj's, v_proj's) output recomputed receiver by receiver: the columns of
        query head h (KV group g) from input_layernorm(residual + leaf[:, :, r]), r its receiver
        index in `attention_receivers` order."""
        attn, norm, seen = self.layers[layer].self_attn, self.layers[layer].input_layernorm, {}
        H, G = self.n_heads, self.n_kv
        spans = {"q": (0, H), "k": (H, H + G), "v": (H + G, H + 2 * G)}

        def recompute(port):
            proj = getattr(attn, f"{port}_proj")
            lo, hi = spans[port]

            def hook(m, args, out):
                # .forward: the norm's own hooks (the grab below) do not fire again
                x = norm.forward(seen["x"][:, :, None, :] + leaf[:, :, lo:hi])
                w = proj.weight.view(hi - lo, self.d_head, self.d)  # [out = (unit, d_head), in]
                y = torch.einsum("btud,ued->btue", x, w)
                if proj.bias is not None:
                    y = y + proj.bias.view(hi - lo, self.d_head)
                return y.reshape(out.shape)
            return proj.register_forward_hook(hook)

        grab = norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
        return [grab, *(recompute(port) for port in "qkv")]

    def hook_mlp_input(self, layer: int, leaf: torch.Tensor) -> list:
        return [pre_hook_adding(self.layers[layer].post_attention_layernorm, leaf)]

    def hook_final_input(self, leaf: torch.Tensor) -> list:
        return [pre_hook_adding(self.model.model.norm, leaf)]

    def head_writes(self, layer: int, dz: torch.Tensor) -> torch.Tensor:
        w_o = self.layers[layer].self_attn.o_proj.weight.view(self.d, self.n_heads, self.d_head)
        return torch.einsum("bthe,dhe->bthd", dz.unflatten(-1, (self.n_heads, self.d_head)), w_o)


def make(model) -> LlamaAdapter | None:
    from kdmech.analysis.ablation.llama_runner import supported

    if not supported(model):
        return None
    model.set_attn_implementation("eager")  # as the exact runner and the bridge run it
    return LlamaAdapter(model)
