"""Tasks: prompt generators and the prompt-set type (SPEC §2)."""

from kdmech.errors import KdmechError
from kdmech.tasks.greater_than import GreaterThanTask
from kdmech.tasks.ioi import IOITask
from kdmech.tasks.numerals import NumeralTask
from kdmech.tasks.prompt_set import (PromptSet, PromptTexts, check_same_tokenization,
                                     tokenize_prompts)

TASKS = {
    "numerals": NumeralTask,
    "numerals-words": lambda **kw: NumeralTask(fmt="words", **kw),
    "numerals-months": lambda **kw: NumeralTask(fmt="months", **kw),
    "numerals-days": lambda **kw: NumeralTask(fmt="days", start_max=3, **kw),
    "ioi": lambda per_type=100, **kw: IOITask(n=per_type, **kw),
    "greater-than": lambda per_type=100, **kw: GreaterThanTask(n=per_type, **kw),
}


def get_task(name: str, **kwargs):
    """A task generator by name; a one-line error lists the accepted names."""
    if name not in TASKS:
        raise KdmechError(f"task {name!r} is unknown; accepted: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = ["GreaterThanTask", "IOITask", "NumeralTask", "PromptSet", "PromptTexts", "TASKS", "check_same_tokenization",
           "get_task", "tokenize_prompts"]
