"""Indirect-object identification (Wang et al. 2022), SPEC §2.

"When Mary and John went to the store, John gave a drink to" → " Mary" (the indirect object,
IO) versus " John" (the subject, S); LD = logit(IO) − logit(S) at the last token. Each prompt
is an ABBA or BABA ordering of the two names. The corrupted prompt ("ABC") replaces every name
by a random name, all three distinct, keeping the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptTexts

NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "Laura", "Paul", "Emma",
         "David", "Anna", "Peter", "Kate", "Mark", "Lisa"]
PLACES = ["store", "garden", "school", "hospital", "office", "park", "station", "restaurant"]
OBJECTS = ["drink", "ring", "book", "bone", "snack", "basketball", "computer", "necklace"]
TEMPLATES = [
    "When {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "Then {A} and {B} walked to the {PLACE}, {C} handed a {OBJECT} to",
]  # one length in words, so per-position means exist


def words() -> list[str]:
    template_words = {w.strip(",") for t in TEMPLATES for w in t.split() if "{" not in w}
    return sorted(set(NAMES) | set(PLACES) | set(OBJECTS) | template_words)


@dataclass(frozen=True)
class IOITask:
    """`n` prompts, half ABBA and half BABA, over the templates above."""

    n: int = 100
    seed: int = 0
    cloze: bool = False
    """BERT cloze form (SPEC §2): the final `to <IO>` becomes `to [MASK]`."""

    def __post_init__(self):
        if self.n < 1:
            raise KdmechError(f"IOI needs n ≥ 1 prompts, got {self.n}")

    def prompts(self) -> PromptTexts:
        rng = random.Random(self.seed)
        clean, corrupted, answers, wrongs, groups = [], [], [], [], []
        for i in range(self.n):
            template = rng.choice(TEMPLATES)
            io, s = rng.sample(NAMES, 2)
            place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
            order = "ABBA" if i % 2 == 0 else "BABA"
            first, second = (io, s) if order == "ABBA" else (s, io)
            slot = " [MASK]" if self.cloze else ""
            clean.append(template.format(A=first, B=second, C=s, PLACE=place, OBJECT=obj) + slot)
            a, b, c = rng.sample(NAMES, 3)
            corrupted.append(template.format(A=a, B=b, C=c, PLACE=place, OBJECT=obj) + slot)
            answers.append(f" {io}")
            wrongs.append(f" {s}")
            groups.append(order)
        return PromptTexts("ioi-cloze" if self.cloze else "ioi", clean, corrupted, answers, wrongs, groups)
