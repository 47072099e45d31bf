"""Greater-than (Hanna et al. 2023), docs/method.md §2.5.

"The war lasted from the year 1732 to the year 17" → the model should put its probability on
two-digit endings greater than 32. Metric: Σ p(years > XX) − Σ p(years ≤ XX) over the 100
two-digit tokens 00..99 at the last position (not a logit difference; the prompt set says so in
its `metric`). The corrupted prompt sets XX to 01. The answer/wrong-answer pair recorded for each
prompt (XX+1 and XX) only serves the shared validation and the teacher filter's tie-break.
Years are written as one number ("1732"); tokenizers must split it into YY and XX, as GPT-2's
does and kdmech's word tokenizer does (it isolates digit pairs). GPT-2's BPE does not split
every year so: " 1440" is one token and " 1302" is " 130" "2". As Hanna et al. do, the task
uses only years whose halves are single tokens — `UNSPLIT` lists the ones GPT-2 merges
otherwise (tests/test_gpt2_bpe.py checks the list against GPT-2's own BPE files); YY01, the
corruption, splits for every century here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptTexts

NOUNS = ["war", "trip", "project", "journey", "reign", "strike", "meeting", "festival",
         "expedition", "drought"]
TEMPLATE = "The {noun} lasted from the year {yy}{xx} to the year {yy}"
CENTURIES = range(11, 18)
ENDINGS = range(2, 99)
# Endings XX (in ENDINGS) whose year " YYXX" GPT-2's BPE does not tokenize as " YY" "XX".
UNSPLIT: dict[int, frozenset[int]] = {
    11: frozenset([*range(2, 10), 11, *range(13, 19), *range(20, 30), *range(51, 60), *range(90, 99)]),
    12: frozenset([80]),
    13: frozenset(range(2, 10)),
    14: frozenset([40]),
    15: frozenset(range(2, 10)),
}


def endings(century: int) -> list[int]:
    """The endings XX the task uses with century YY: 02..98 less GPT-2's unsplit years."""
    return [xx for xx in ENDINGS if xx not in UNSPLIT.get(century, ())]


def words() -> list[str]:
    return sorted(set(NOUNS) | {"The", "lasted", "from", "the", "year", "to"})


@dataclass(frozen=True)
class GreaterThanTask:
    n: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise KdmechError(f"greater-than needs n ≥ 1 prompts, got {self.n}")

    def prompts(self) -> PromptTexts:
        rng = random.Random(self.seed)
        clean, corrupted, answers, wrongs, groups = [], [], [], [], []
        for _ in range(self.n):
            noun, yy = rng.choice(NOUNS), rng.choice(CENTURIES)
            xx = rng.choice(endings(yy))
            clean.append(TEMPLATE.format(noun=noun, yy=yy, xx=f"{xx:02d}"))
            corrupted.append(TEMPLATE.format(noun=noun, yy=yy, xx="01"))
            answers.append(f"{xx + 1:02d}")
            wrongs.append(f"{xx:02d}")
            groups.append(str(yy))
        return PromptTexts("greater-than", clean, corrupted, answers, wrongs, groups, "greater_than")
