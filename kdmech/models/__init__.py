"""Models: loading, capacity specs and students built from teachers, tiny teachers."""

from kdmech.models.capacity import CapacitySpec, build_gpt2_student, layer_map
from kdmech.models.loading import load_causal_lm, load_masked_lm
from kdmech.models.tiny import TinyGPT2Spec
from kdmech.models.tokenizer import build_word_tokenizer

__all__ = ["CapacitySpec", "TinyGPT2Spec", "build_gpt2_student", "build_word_tokenizer",
           "layer_map", "load_causal_lm", "load_masked_lm"]
