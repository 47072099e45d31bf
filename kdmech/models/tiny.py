"""The tiny GPT-2 teacher kdmech trains offline on the synthetic tasks."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, GPT2LMHeadModel

from kdmech.errors import KdmechError


@dataclass(frozen=True)
class TinyGPT2Spec:
    """Architecture of a tiny GPT-2 teacher (vocabulary size comes from the tokenizer)."""

    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """d_model; must be divisible by n_head."""
    n_positions: int = 64
    """Longest sequence in tokens."""

    def __post_init__(self):
        if min(self.n_layer, self.n_head, self.n_embd, self.n_positions) < 1:
            raise KdmechError(f"tiny GPT-2 sizes must be positive, got {self}")
        if self.n_embd % self.n_head:
            raise KdmechError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

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
