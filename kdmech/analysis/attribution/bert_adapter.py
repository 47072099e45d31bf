"""BERT's attribution points (`adapter.AttributionAdapter`, nodes only), on BertForMaskedLM.

Head outputs before W_O: the input of `attention.output.dense`; MLP output: the output of
`output.dense`, before the residual sum and the block's LayerNorm — where the exact ablation
replaces them (`ablation.bert_runner`). Edges are refused: each block's LayerNorm renormalises
the sum of every path, so a receiver input does not separate into senders' writes.
"""

from __future__ import annotations

import torch


class BertAdapter:
    edges = False

    def __init__(self, model):
        self.model = model
        c = model.config
        self.n_layers, self.n_heads = c.num_hidden_layers, c.num_attention_heads
        self.d_head = c.hidden_size // self.n_heads
        self.layers = model.bert.encoder.layer

    def z_module(self, layer: int):
        return self.layers[layer].attention.output.dense

    def mlp_module(self, layer: int):
        return self.layers[layer].output.dense

    def logits_at(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.model.bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return self.model.cls(h[torch.arange(ids.shape[0], device=ids.device), positions])


def make(model) -> BertAdapter | None:
    return BertAdapter(model) if type(model).__name__ == "BertForMaskedLM" else None
