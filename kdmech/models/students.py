"""A student for any supported teacher, built by the teacher's own family."""

from __future__ import annotations

from kdmech.models.capacity import CapacitySpec, InitStrategy
from kdmech.models.family import family_of


def build_student(teacher, capacity: CapacitySpec, init: InitStrategy = "every_k", seed: int = 0,
                  importance=None, shape: dict | None = None):
    """(student, provenance) of the teacher's family (see build_gpt2_student / build_bert_student /
    build_llama_student); `importance` (models.importance.Importance) for init importance,
    `shape` to give the student's shape instead of the capacity's."""
    return family_of(teacher).build_student(teacher, capacity, init, seed=seed, importance=importance, shape=shape)
