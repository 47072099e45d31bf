"""DistilBERT → BertForMaskedLM conversion keeps the logits."""

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


def test_masked_lm_loader_converts_distilbert_folders(tmp_path, tokenizer):
    import pytest
    from transformers import BertForMaskedLM

    from kdmech.errors import KdmechError
    from kdmech.models import load_masked_lm

    torch.manual_seed(1)
    cfg = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id)
    original = DistilBertForMaskedLM(cfg).eval()
    original.save_pretrained(tmp_path / "distil")
    tokenizer.save_pretrained(tmp_path / "distil")
    model, tok = load_masked_lm(tmp_path / "distil")
    assert isinstance(model, BertForMaskedLM) and not model.training
    ids = torch.tensor([tok.encode("[CLS] Van done in [MASK] [SEP]", add_special_tokens=False)])
    with torch.no_grad():
        assert (model(input_ids=ids).logits - original(input_ids=ids).logits).abs().max() < 1e-5
    with pytest.raises(KdmechError, match="masked-LM teachers"):
        from kdmech.models import TinyGPT2Spec
        TinyGPT2Spec(n_layer=1, n_embd=16).build(tokenizer).save_pretrained(tmp_path / "gpt")
        load_masked_lm(tmp_path / "gpt")
