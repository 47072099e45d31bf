"""The tiny Llama-layout teacher: Llama, Mistral, Qwen2 or Qwen3 (`--tiny.model_type`), with
grouped-query attention on (`n_kv_head` KV groups, default half the heads), untied
embeddings, RMSNorm, rotary positions and a gated MLP (d_mlp ≈ 8/3·d_model, as in Llama).
Qwen2 keeps its q/k/v biases and Qwen3 its per-head q/k RMSNorms; head_dim is always
n_embd / n_head (Qwen3's config would otherwise default to 128)."""

from __future__ import annotations

from dataclasses import dataclass

from kdmech.errors import KdmechError
from kdmech.models.tiny import TinySpec

LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def llama_classes(model_type: str):
    """(config class, causal-LM class) of a Llama-layout model type."""
    import transformers as tf

    classes = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
               "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
               "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
               "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM)}
    if model_type not in classes:
        raise KdmechError(f"tiny model_type {model_type!r} is unknown; accepted: {list(LLAMA_TYPES)}")
    return classes[model_type]


def gated_mlp_width(d_model: int) -> int:
    """Llama's gated-MLP width for d_model: 8/3·d_model rounded to a multiple of 16."""
    return max(16, 16 * round(8 * d_model / 3 / 16))


@dataclass(frozen=True)
class TinyLlamaSpec(TinySpec):
    """A tiny Llama-layout teacher of the sizes of `TinySpec`."""

    def __post_init__(self):
        super().__post_init__()
        llama_classes(self.model_type or "llama")
        if self.kv_heads < 1 or self.n_head % self.kv_heads:
            raise KdmechError(f"n_kv_head {self.n_kv_head} must divide n_head {self.n_head} "
                              f"(each KV group serves n_head / n_kv_head query heads)")
        if (self.n_embd // self.n_head) % 2:
            raise KdmechError(f"head_dim n_embd / n_head = {self.n_embd // self.n_head} must be even "
                              f"(rotary embeddings rotate pairs of dimensions)")

    @property
    def kv_heads(self) -> int:
        if self.n_kv_head is not None:
            return self.n_kv_head
        return self.n_head // 2 if self.n_head % 2 == 0 else self.n_head

    def config(self, tokenizer):
        config_cls, _ = llama_classes(self.model_type or "llama")
        return config_cls(
            vocab_size=len(tokenizer), hidden_size=self.n_embd, intermediate_size=gated_mlp_width(self.n_embd),
            num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
            num_key_value_heads=self.kv_heads, head_dim=self.n_embd // self.n_head,
            max_position_embeddings=self.n_positions, tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0, attn_implementation="eager")

    def build(self, tokenizer, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        _, model_cls = llama_classes(self.model_type or "llama")
        return model_cls(self.config(tokenizer))
