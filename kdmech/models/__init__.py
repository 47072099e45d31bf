"""Models: loading, capacity specs and students built from teachers, tiny teachers."""

from kdmech.models.capacity import CapacitySpec, build_gpt2_student, layer_map
from kdmech.models.loading import load_causal_lm, load_lm, load_masked_lm, model_kind
from kdmech.models.students import build_student
from kdmech.models.bert_student import build_bert_student
from kdmech.models.tiny import TinyBertSpec, TinyGPT2Spec, TinySpec
from kdmech.models.tiny_llama import TinyLlamaSpec
from kdmech.models.llama_student import build_llama_student
from kdmech.models.family import FAMILIES, ModelFamily, family_of, get_family, tiny_spec
from kdmech.models.tokenizer import build_word_tokenizer

__all__ = ["CapacitySpec", "FAMILIES", "ModelFamily", "TinyBertSpec", "TinyGPT2Spec", "TinyLlamaSpec", "TinySpec",
           "build_bert_student", "build_gpt2_student", "build_llama_student", "build_word_tokenizer",
           "build_student", "family_of", "get_family", "layer_map", "load_causal_lm", "load_lm", "load_masked_lm",
           "model_kind", "tiny_spec"]
