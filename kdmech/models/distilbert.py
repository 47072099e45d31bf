"""DistilBERT checkpoints as BertForMaskedLM (TransformerLens' bridge refuses DistilBERT).

The mapping is one-to-one: DistilBERT is BERT without token-type embeddings (set to zero here),
without the pooler, with the same post-LayerNorm blocks and the same MLM head. A test builds a
tiny DistilBERT, converts it and checks the logits agree within 1e-5.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, DistilBertForMaskedLM

from kdmech.errors import KdmechError


def distilbert_to_bert(model: DistilBertForMaskedLM) -> BertForMaskedLM:
    if not isinstance(model, DistilBertForMaskedLM):
        raise KdmechError(f"expected a DistilBertForMaskedLM, got {type(model).__name__}")
    c = model.config
    if getattr(c, "sinusoidal_pos_embds", False):
        raise KdmechError("DistilBERT with sinusoidal position embeddings is not supported")
    config = BertConfig(vocab_size=c.vocab_size, hidden_size=c.dim, num_hidden_layers=c.n_layers,
                        num_attention_heads=c.n_heads, intermediate_size=c.hidden_dim,
                        hidden_act=c.activation, max_position_embeddings=c.max_position_embeddings,
                        type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=c.pad_token_id,
                        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.attention_dropout,
                        tie_word_embeddings=getattr(c, "tie_word_embeddings", True))
    bert = BertForMaskedLM(config).eval()
    d, b = model.distilbert, bert.bert

    def copy(dst: torch.nn.Module, src: torch.nn.Module) -> None:
        dst.weight.data.copy_(src.weight.data)
        if getattr(dst, "bias", None) is not None:
            dst.bias.data.copy_(src.bias.data)

    with torch.no_grad():
        copy(b.embeddings.word_embeddings, d.embeddings.word_embeddings)
        copy(b.embeddings.position_embeddings, d.embeddings.position_embeddings)
        b.embeddings.token_type_embeddings.weight.zero_()
        copy(b.embeddings.LayerNorm, d.embeddings.LayerNorm)
        for src, dst in zip(d.transformer.layer, b.encoder.layer):
            copy(dst.attention.self.query, src.attention.q_lin)
            copy(dst.attention.self.key, src.attention.k_lin)
            copy(dst.attention.self.value, src.attention.v_lin)
            copy(dst.attention.output.dense, src.attention.out_lin)
            copy(dst.attention.output.LayerNorm, src.sa_layer_norm)
            copy(dst.intermediate.dense, src.ffn.lin1)
            copy(dst.output.dense, src.ffn.lin2)
            copy(dst.output.LayerNorm, src.output_layer_norm)
        head = bert.cls.predictions
        copy(head.transform.dense, model.vocab_transform)
        copy(head.transform.LayerNorm, model.vocab_layer_norm)
        head.decoder.weight.data.copy_(model.vocab_projector.weight.data)
        head.bias.data.copy_(model.vocab_projector.bias.data)
    return bert
