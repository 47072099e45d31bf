"""Tasks: prompt generators and the prompt-set type (docs/method.md §2)."""

from kdmech.errors import KdmechError
from kdmech.tasks.greater_than import GreaterThanTask
from kdmech.tasks.ioi import IOITask
from kdmech.tasks.numerals import NumeralTask
from kdmech.tasks.prompt_set import (PromptSet, PromptTexts, check_same_tokenization,
                                     tokenize_prompts)

TASKS = {
    "numerals": NumeralTask,
    # Cloze form with starts 1..8 kept (answers 5..12); the same prompts as numerals for GPT-2.
    "numerals-any-start": lambda **kw: NumeralTask(renumber=False, **kw),
    "numerals-words": lambda **kw: NumeralTask(fmt="words", **kw),
    "numerals-months": lambda **kw: NumeralTask(fmt="months", **kw),
    "numerals-days": lambda **kw: NumeralTask(fmt="days", start_max=3, **kw),
    "ioi": lambda per_type=100, **kw: IOITask(n=per_type, **kw),
    "greater-than": lambda per_type=100, **kw: GreaterThanTask(n=per_type, **kw),
}


# Tasks with a BERT cloze form (docs/method.md §2.3): the slot to predict is `[MASK]`.
CLOZE_TASKS = ("numerals", "numerals-any-start", "numerals-words", "numerals-months", "numerals-days", "ioi")


def get_task(name: str, cloze: bool = False, tokenizer=None, **kwargs):
    """A task generator by name (its cloze form for masked LMs when `cloze`; fitted to
    `tokenizer` where the task has a form for tokenizers that split digits, docs/method.md
    §2.8); a one-line error lists the accepted names."""
    if name not in TASKS:
        raise KdmechError(f"task {name!r} is unknown; accepted: {sorted(TASKS)}")
    if cloze:
        if name not in CLOZE_TASKS:
            raise KdmechError(f"task {name!r} has no cloze ([MASK]) form for masked-LM (BERT) "
                              f"models; accepted: {list(CLOZE_TASKS)}")
        kwargs["cloze"] = True
    task = TASKS[name](**kwargs)
    return task.fit_to(tokenizer) if tokenizer is not None and hasattr(task, "fit_to") else task


__all__ = ["CLOZE_TASKS", "GreaterThanTask", "IOITask", "NumeralTask", "PromptSet", "PromptTexts", "TASKS",
           "check_same_tokenization", "get_task", "tokenize_prompts"]
