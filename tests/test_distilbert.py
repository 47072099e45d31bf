"""DistilBERT → BertForMaskedLM conversion keeps the logits (issue 4's first building block)."""

import torch
from transformers import DistilBertConfig, DistilBertForMaskedLM

from kdmech.models.distilbert import distilbert_to_bert


def test_converted_distilbert_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=40)
    DistilBertForMaskedLM(cfg).eval().save_pretrained(tmp_path)
    original = DistilBertForMaskedLM.from_pretrained(tmp_path).eval()
    bert = distilbert_to_bert(original)
    ids = torch.randint(0, 120, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding must be handled identically
    with torch.no_grad():
        a = original(input_ids=ids, attention_mask=mask).logits
        b = bert(input_ids=ids, attention_mask=mask).logits
    assert (a - b).abs().max().item() < 1e-5
