"""Distribution shift (docs/method.md §2.7): how teacher and student cope with numeral prompts
unlike their training data — longer sequences, values outside the trained range, other
formats, unseen templates. Each shift reports LD and top-1 for both models; a shift whose
prompts do not tokenize for these models is reported with the reason, never dropped silently.
Masked LMs get the cloze form with the drawn starts kept (renumbering to 1..4 would erase
the range shift).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdmech.errors import KdmechError
from kdmech.tasks import NumeralTask, check_same_tokenization
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.tasks.forms import ModelKind, prompt_form

SHIFTS: dict[str, dict] = {
    "in-distribution": {},
    "longer-6": {"n_items": 6, "start_max": 4},
    "longer-8": {"n_items": 8, "start_max": 4},
    "range-20-40": {"start_min": 20, "start_max": 40},
    "words": {"fmt": "words"},
    "months": {"fmt": "months"},
    "days": {"fmt": "days", "start_max": 3},
    "unseen-templates": {"types": ("sold", "built")},
}


@dataclass(frozen=True)
class ShiftRow:
    shift: str
    settings: dict
    n: int
    teacher: dict
    student: dict
    error: str = ""


def distribution_shift(teacher, student, teacher_tok, student_tok, per_type: int = 64,
                       seed: int = 7, shifts: dict[str, dict] = SHIFTS, progress=None,
                       kind: ModelKind = "causal", max_batch_tokens: int = 0) -> list[ShiftRow]:
    """`max_batch_tokens`: the analyses' memory budget (`AnalysisOptions.max_batch_tokens`)."""
    rows = []
    for name, settings in shifts.items():
        task = NumeralTask(per_type=per_type if "types" not in settings else per_type * 3 // 2,
                           seed=seed, cloze=prompt_form(kind).cloze, renumber=False, **settings)
        try:
            task = task.fit_to(teacher_tok)  # digits kept to single tokens where the tokenizer splits them
            prompts = check_same_tokenization(teacher_tok, student_tok, task.prompts(), kind)
        except KdmechError as e:
            rows.append(ShiftRow(name, _jsonable(settings), 0, {}, {}, str(e)))
        else:
            rows.append(ShiftRow(name, _jsonable(settings), len(prompts),
                                 accuracy_and_ld(teacher, prompts, max_batch_tokens),
                                 accuracy_and_ld(student, prompts, max_batch_tokens)))
        if progress:
            progress(1)
    return rows


def _jsonable(settings: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def rows_to_json(rows: list[ShiftRow]) -> list[dict]:
    return [asdict(r) for r in rows]
