"""Distillation: losses, Lightning modules and the synthetic-corpus data module."""

from kdmech.distill.data import CorpusDataModule, corpus_dataset
from kdmech.distill.lm_module import CausalLMModule, MaskedLMModule
from kdmech.distill.losses import LossWeights, causal_lm_ce, hidden_cosine, kd_kl
from kdmech.distill.masking import BertMasker, make_masker
from kdmech.distill.module import DistillationModule

__all__ = ["BertMasker", "CausalLMModule", "CorpusDataModule", "DistillationModule", "LossWeights", "MaskedLMModule",
           "make_masker",
           "causal_lm_ce", "corpus_dataset", "hidden_cosine", "kd_kl"]
