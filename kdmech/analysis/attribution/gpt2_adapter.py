"""GPT-2's attribution points (`adapter.AttributionAdapter`), on Hugging Face's GPT2LMHeadModel.

Head outputs before W_O: the input of `attn.c_proj`; MLP output: the output of `mlp`. Receivers:
each head's q, k and v input (its columns of `attn.c_attn`'s output [q | k | v], recomputed from
ln_1 of residual + that receiver's leaf), the MLP's input (ln_2 reads residual + leaf) and the
final residual (ln_f reads residual + leaf).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdmech.analysis.attribution.adapter import pre_hook_adding
from kdmech.analysis.edges import Receiver


class GPT2Adapter:
    edges = True

    def __init__(self, model):
        self.model = model
        c = model.config
        self.n_layers, self.n_heads, self.d = c.n_layer, c.n_head, c.n_embd
        self.d_head = self.d // self.n_heads
        self.blocks = model.transformer.h

    def z_module(self, layer: int):
        return self.blocks[layer].attn.c_proj

    def mlp_module(self, layer: int):
        return self.blocks[layer].mlp

    def logits_at(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.model.transformer(input_ids=ids, use_cache=False).last_hidden_state
        return self.model.lm_head(h[torch.arange(ids.shape[0], device=ids.device), positions])

    def attention_receivers(self, layer: int) -> list[Receiver]:
        return [Receiver(layer, port, h) for port in "qkv" for h in range(self.n_heads)]

    def hook_attention_inputs(self, layer: int, leaf: torch.Tensor) -> list:
        """c_attn's output recomputed receiver by receiver: columns of head h's q (k, v) from
        ln_1(residual + leaf[:, :, r]), r its receiver index (q heads, then k, then v)."""
        block, seen = self.blocks[layer], {}
        ln, c_attn = block.ln_1, block.attn.c_attn
        r = 3 * self.n_heads

        def split(m, args, out):
            x = F.layer_norm(seen["x"][:, :, None, :] + leaf, (self.d,), ln.weight, ln.bias, ln.eps)
            w = c_attn.weight.view(self.d, r, self.d_head)  # Conv1D [in, out]; out = (q|k|v, head, d_head)
            y = torch.einsum("btrd,dre->btre", x, w) + c_attn.bias.view(r, self.d_head)
            return y.reshape(out.shape)

        grab = ln.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
        return [grab, c_attn.register_forward_hook(split)]

    def hook_mlp_input(self, layer: int, leaf: torch.Tensor) -> list:
        return [pre_hook_adding(self.blocks[layer].ln_2, leaf)]

    def hook_final_input(self, leaf: torch.Tensor) -> list:
        return [pre_hook_adding(self.model.transformer.ln_f, leaf)]

    def head_writes(self, layer: int, dz: torch.Tensor) -> torch.Tensor:
        w_o = self.blocks[layer].attn.c_proj.weight.view(self.n_heads, self.d_head, self.d)
        return torch.einsum("bthe,hed->bthd", dz.unflatten(-1, (self.n_heads, self.d_head)), w_o)


def make(model) -> GPT2Adapter | None:
    from kdmech.analysis.ablation.gpt2_runner import supported
    return GPT2Adapter(model) if supported(model) else None
