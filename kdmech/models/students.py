"""A student for any supported teacher: GPT-2 or BERT, by the teacher's own type."""

from __future__ import annotations

from kdmech.models.bert_student import build_bert_student
from kdmech.models.capacity import CapacitySpec, InitStrategy, build_gpt2_student
from kdmech.models.loading import model_kind


def build_student(teacher, capacity: CapacitySpec, init: InitStrategy = "every_k", seed: int = 0):
    """(student, provenance) of the teacher's family (see build_gpt2_student / build_bert_student)."""
    build = build_bert_student if model_kind(teacher) == "masked" else build_gpt2_student
    return build(teacher, capacity, init, seed=seed)
