"""The tiny teachers kdmech trains offline on the synthetic tasks: a GPT-2 (causal LM), a
BERT (masked LM) and a Llama-layout decoder (`tiny_llama.TinyLlamaSpec`) of the same sizes.
`models.family.tiny_spec` picks one by family name."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from kdmech.errors import KdmechError


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny teacher of either family (vocabulary size comes from the tokenizer)."""

    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """d_model; must be divisible by n_head."""
    n_positions: int = 64
    """Longest sequence in tokens."""
    n_kv_head: int | None = None
    """Llama family only: key/value groups (grouped-query attention); default half the heads
    (all of them when n_head is odd)."""
    model_type: str | None = None
    """Llama family only: llama, mistral, qwen2 or qwen3 (default llama)."""

    def __post_init__(self):
        if min(self.n_layer, self.n_head, self.n_embd, self.n_positions) < 1:
            raise KdmechError(f"tiny teacher sizes must be positive, got {self}")
        if self.n_embd % self.n_head:
            raise KdmechError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")


@dataclass(frozen=True)
class TinyGPT2Spec(TinySpec):
    """A tiny GPT-2 teacher."""

    def build(self, tokenizer, seed: int = 0) -> GPT2LMHeadModel:
        import torch

        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=self.n_positions,
                            n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head,
                            bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(config)


@dataclass(frozen=True)
class TinyBertSpec(TinySpec):
    """A tiny BERT teacher with the same sizes (d_mlp = 4·n_embd, as in BERT)."""

    def build(self, tokenizer, seed: int = 0) -> BertForMaskedLM:
        import torch

        torch.manual_seed(seed)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=self.n_embd,
                            num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
                            intermediate_size=4 * self.n_embd, max_position_embeddings=self.n_positions,
                            pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
        return BertForMaskedLM(config)

