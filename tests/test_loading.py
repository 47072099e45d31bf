import json

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from kdmech.errors import KdmechError
from kdmech.models import load_causal_lm


def test_loads_a_gpt2_saved_to_a_folder(tmp_path, tiny_gpt2, tokenizer, prompts):
    tiny_gpt2.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_causal_lm(tmp_path)
    assert not model.training
    assert tok.encode(" 5", add_special_tokens=False) == tokenizer.encode(" 5", add_special_tokens=False)
    with torch.no_grad():
        diff = (model(prompts.clean).logits - tiny_gpt2(prompts.clean).logits).abs().max()
        assert diff < 1e-4


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(KdmechError, match="has no config.json"):
        load_causal_lm(tmp_path)


def test_non_causal_model_is_refused(tmp_path, tokenizer):
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"
    with pytest.raises(KdmechError, match="is a 'bert'; causal teachers"):
        load_causal_lm(tmp_path)
