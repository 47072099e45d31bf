"""Numeral sequence completion, the main task (SPEC §2).

``W1 done in n. W2 done in n+1. W3 done in n+2. W4 done in n+3. W5 done in`` → ``n+4``
(correct) versus ``n+3`` (the last item repeated). Three prompt types: ``done`` (nouns),
``lost`` (objects) and ``names`` (people, ``born in``). The corrupted prompt replaces the four
items by random integers in 1..12 with r4 − 1 ≠ r3 and keeps every other token.

`training_corpus` writes full sequences of the same templates for the tiny teacher. It keeps
room for distribution-shift tests: digits only, starts 1..8, at most five items, and only the
three templates above (other formats, ranges, lengths and templates stay unseen).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptTexts

NOUNS = ["Van", "Hat", "Ring", "Desk", "Sun", "Ice", "Snow", "Watch", "Queen", "Oil", "Rose",
         "Car", "Moon", "Book", "Key", "Star", "Road", "Box", "Apple", "Chair", "Gate", "Flag",
         "Tree", "Ball"]
OBJECTS = ["Pen", "Cup", "Bag", "Coin", "Shoe", "Phone", "Lamp", "Map", "Bell", "Kite", "Fork",
           "Boat", "Card", "Drum", "Glove", "Mask"]
PEOPLE = ["Marcus", "Anna", "John", "Mary", "David", "Sarah", "Peter", "Laura", "James", "Emma",
          "Paul", "Alice", "Thomas", "Julia", "Daniel", "Sophie"]

PromptType = Literal["done", "lost", "names"]
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "done": (NOUNS, "done in"),
    "lost": (OBJECTS, "lost in"),
    "names": (PEOPLE, "born in"),
}
N_ITEMS = 4
STARTS = range(1, 9)
CORRUPT_RANGE = (1, 12)


def words() -> list[str]:
    """Every word these prompts use (for building a word-level vocabulary)."""
    verbs = {w for _, phrase in TEMPLATES.values() for w in phrase.split()}
    return sorted(set(NOUNS) | set(OBJECTS) | set(PEOPLE) | verbs)


def _sentence(subjects: list[str], phrase: str, values: list[int | None]) -> str:
    parts = [f"{s} {phrase} {v}." if v is not None else f"{s} {phrase}"
             for s, v in zip(subjects, values)]
    return " ".join(parts)


def _corrupt_values(rng: random.Random, n_items: int) -> list[int]:
    lo, hi = CORRUPT_RANGE
    while True:
        r = [rng.randint(lo, hi) for _ in range(n_items)]
        if r[-1] - 1 != r[-2]:
            return r


@dataclass(frozen=True)
class NumeralTask:
    """Generator of numeral prompts. `per_type` prompts of each type in `types`."""

    per_type: int = 128
    types: tuple[str, ...] = ("done", "lost", "names")
    seed: int = 0

    def __post_init__(self):
        bad = [t for t in self.types if t not in TEMPLATES]
        if bad:
            raise KdmechError(f"numeral prompt type {bad[0]!r} is unknown; accepted: "
                              f"{sorted(TEMPLATES)}")
        if self.per_type < 1:
            raise KdmechError(f"per_type must be ≥ 1, got {self.per_type}")

    def prompts(self) -> PromptTexts:
        rng = random.Random(self.seed)
        clean, corrupted, answers, wrongs, groups = [], [], [], [], []
        for kind in self.types:
            pool, phrase = TEMPLATES[kind]
            for _ in range(self.per_type):
                n = rng.choice(STARTS)
                subjects = rng.sample(pool, N_ITEMS + 1)
                values = [n + i for i in range(N_ITEMS)]
                clean.append(_sentence(subjects, phrase, [*values, None]))
                corrupted.append(_sentence(subjects, phrase,
                                           [*_corrupt_values(rng, N_ITEMS), None]))
                answers.append(f" {n + N_ITEMS}")
                wrongs.append(f" {n + N_ITEMS - 1}")
                groups.append(kind)
        return PromptTexts("numerals", clean, corrupted, answers, wrongs, groups)


def training_corpus(n: int, seed: int) -> list[str]:
    """`n` complete sequences (2 to 5 items, starts 1..8) over the three templates."""
    rng = random.Random(seed)
    kinds = sorted(TEMPLATES)
    out = []
    for _ in range(n):
        pool, phrase = TEMPLATES[rng.choice(kinds)]
        k = rng.randint(2, N_ITEMS + 1)
        start = rng.choice(STARTS)
        out.append(_sentence(rng.sample(pool, k), phrase, [start + i for i in range(k)]))
    return out
