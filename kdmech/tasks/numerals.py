"""Numeral sequence completion, the main task (docs/method.md §2.2).

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
from dataclasses import dataclass, replace
from typing import Literal

from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptTexts
from kdmech.tasks.split_digits import ids, largest_single_value, single, splits_space

NOUNS = ["Van", "Hat", "Ring", "Desk", "Sun", "Ice", "Snow", "Watch", "Queen", "Oil", "Rose",
         "Car", "Moon", "Book", "Key", "Star", "Road", "Box", "Apple", "Chair", "Gate", "Flag",
         "Tree", "Ball"]
OBJECTS = ["Pen", "Wallet", "Camera", "Coin", "Clock", "Phone", "Radio", "Map", "Bell", "Letter",
           "Chain", "Button", "Card", "Disk", "Sword", "Mask"]
PEOPLE = ["Marcus", "Anna", "John", "Mary", "David", "Sarah", "Peter", "Laura", "James", "Emily",
          "Paul", "Alice", "Thomas", "Lisa", "Daniel", "Rachel"]
# Every subject is one GPT-2 token both as " Word" and as "Word" (the first word of a prompt has
# no leading space), so a prompt set keeps one length under GPT-2's BPE (tests/test_gpt2_bpe.py).

PromptType = Literal["done", "lost", "names"]
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "done": (NOUNS, "done in"),
    "lost": (OBJECTS, "lost in"),
    "names": (PEOPLE, "born in"),
}
# Never in the training corpus: for distribution-shift tests.
UNSEEN_TEMPLATES: dict[str, tuple[list[str], str]] = {
    "sold": (OBJECTS, "sold in"),
    "built": (NOUNS, "built in"),
}
N_ITEMS = 4
STARTS = range(1, 9)
CORRUPT_RANGE = (1, 12)

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
Format = Literal["digits", "words", "months", "days"]
FORMAT_MAX = {"digits": 99, "words": 20, "months": 12, "days": 7}


def render(value: int, fmt: str) -> str:
    """A sequence value as the prompt writes it: 5, five, May or Friday (1-based)."""
    if fmt == "digits":
        return str(value)
    if fmt == "words":
        return NUMBER_WORDS[value]
    if fmt == "months":
        return MONTHS[value - 1]
    return DAYS[value - 1]


def words() -> list[str]:
    """Every word these prompts use (for building a word-level vocabulary)."""
    verbs = {w for _, phrase in [*TEMPLATES.values(), *UNSEEN_TEMPLATES.values()]
             for w in phrase.split()}
    return sorted(set(NOUNS) | set(OBJECTS) | set(PEOPLE) | verbs | set(NUMBER_WORDS)
                  | set(MONTHS) | set(DAYS))


def _sentence(subjects: list[str], phrase: str, values: list[int | None], fmt: str = "digits") -> str:
    parts = [f"{s} {phrase} {render(v, fmt)}." if v is not None else f"{s} {phrase}"
             for s, v in zip(subjects, values)]
    return " ".join(parts)


def _corrupt_values(rng: random.Random, n_items: int, hi: int = CORRUPT_RANGE[1]) -> list[int]:
    lo = CORRUPT_RANGE[0]
    while True:
        r = [rng.randint(lo, hi) for _ in range(n_items)]
        if r[-1] - 1 != r[-2]:
            return r


@dataclass(frozen=True)
class NumeralTask:
    """Generator of numeral prompts: `per_type` prompts of each type in `types`, `n_items`
    items before the slot, starts drawn from `start_min`..`start_max`, values written in
    `fmt` (digits, words, months or days)."""

    per_type: int = 128
    types: tuple[str, ...] = ("done", "lost", "names")
    seed: int = 0
    fmt: str = "digits"
    n_items: int = N_ITEMS
    start_min: int = STARTS.start
    start_max: int = STARTS.stop - 1
    cloze: bool = False
    """BERT cloze form (docs/method.md §2.3): values renumbered 1..n_items, the slot is `[MASK]`."""
    renumber: bool = True
    """In the cloze form, renumber to 1..n_items as docs/method.md §2.3 does (the answer is then always
    n_items + 1). False keeps the drawn starts, so the answer varies and a model must read the
    sequence: the form kdmech's tiny BERT teachers are analysed on."""
    corrupt_max: int = CORRUPT_RANGE[1]
    """Corrupted values are drawn from 1..corrupt_max (capped by the format's range)."""
    exclude_subjects: tuple[str, ...] = ()
    """Subjects left out of the pools (`fit_to`: those a tokenizer splits)."""

    def __post_init__(self):
        known = {**TEMPLATES, **UNSEEN_TEMPLATES}
        bad = [t for t in self.types if t not in known]
        if bad:
            raise KdmechError(f"numeral prompt type {bad[0]!r} is unknown; accepted: {sorted(known)}")
        if self.per_type < 1:
            raise KdmechError(f"per_type must be ≥ 1, got {self.per_type}")
        if self.fmt not in FORMAT_MAX:
            raise KdmechError(f"numeral format {self.fmt!r} is unknown; accepted: {sorted(FORMAT_MAX)}")
        if self.n_items < 2 or self.start_min < 1 or self.start_max < self.start_min:
            raise KdmechError(f"need n_items ≥ 2 and 1 ≤ start_min ≤ start_max, got {self.n_items}, "
                              f"{self.start_min}..{self.start_max}")
        if self.corrupt_max < 2:
            raise KdmechError(f"corrupt_max must be ≥ 2, got {self.corrupt_max}")
        for kind in self.types:
            left = [w for w in known[kind][0] if w not in self.exclude_subjects]
            if len(left) <= self.n_items:
                raise KdmechError(f"numeral prompt type {kind!r} keeps {len(left)} subjects after leaving out "
                                  f"{list(self.exclude_subjects)}; it needs more than n_items = {self.n_items}")
        top = self.start_max + self.n_items
        if top > FORMAT_MAX[self.fmt]:
            raise KdmechError(f"format {self.fmt!r} counts to {FORMAT_MAX[self.fmt]}, but starts up to "
                              f"{self.start_max} with {self.n_items} items reach {top}")

    def fit_to(self, tokenizer) -> "NumeralTask":
        """This task as `tokenizer` can read it (docs/method.md §2.8); itself where it already can,
        as for GPT-2's BPE and kdmech's word tokenizer:
        - subjects that are not one token both as a prompt's first word and after a space are left
          out of the pools (Qwen's BPE: "Sword" is "S" "word");
        - where the tokenizer splits the space from digits, the digits are kept to single bare
          tokens (Qwen: values 1..9, so starts up to 9 − n_items and corruptions 1..9). Refused in
          one line when even the smallest answer is several tokens."""
        task = self
        pools = {**TEMPLATES, **UNSEEN_TEMPLATES}
        split = tuple(w for t in self.types for w in pools[t][0]
                      if not (single(tokenizer, w) and single(tokenizer, " " + w)))
        if split:
            task = replace(task, exclude_subjects=tuple(sorted(set(split) | set(self.exclude_subjects))))
        if self.fmt != "digits" or self.cloze or not splits_space(tokenizer, " 5"):
            return task
        top = max(self.start_max + self.n_items, self.corrupt_max)
        k = largest_single_value(tokenizer, top)
        if k >= top:
            return task
        if k - self.n_items < self.start_min:
            answer = str(self.start_min + self.n_items)
            raise KdmechError(f"answer {answer!r} is {len(ids(tokenizer, answer))} tokens "
                              f"{tokenizer.convert_ids_to_tokens(ids(tokenizer, answer))} for tokenizer "
                              f"{tokenizer.name_or_path!r}, which splits digits from the space before "
                              f"them; its single-token numerals end at {k}, and the smallest answer of "
                              f"numerals from {self.start_min} with {self.n_items} items is {answer}")
        return replace(task, start_max=min(self.start_max, k - self.n_items), corrupt_max=min(self.corrupt_max, k))

    def prompts(self) -> PromptTexts:
        rng = random.Random(self.seed)
        known = {**TEMPLATES, **UNSEEN_TEMPLATES}
        k, fmt = self.n_items, self.fmt
        corrupt_hi = min(self.corrupt_max, FORMAT_MAX[fmt])
        clean, corrupted, answers, wrongs, groups = [], [], [], [], []
        for kind in self.types:
            pool, phrase = known[kind]
            pool = [w for w in pool if w not in self.exclude_subjects]
            for _ in range(self.per_type):
                n = 1 if self.cloze and self.renumber else rng.randint(self.start_min, self.start_max)
                subjects = rng.sample(pool, k + 1)
                values = [n + i for i in range(k)]
                slot = " [MASK]" if self.cloze else ""
                clean.append(_sentence(subjects, phrase, [*values, None], fmt) + slot)
                corrupted.append(_sentence(subjects, phrase,
                                           [*_corrupt_values(rng, k, corrupt_hi), None], fmt) + slot)
                answers.append(f" {render(n + k, fmt)}")
                wrongs.append(f" {render(n + k - 1, fmt)}")
                groups.append(kind)
        name = ("numerals" if fmt == "digits" else f"numerals-{fmt}") + ("-cloze" if self.cloze else "")
        if self.cloze and not self.renumber:
            name += "-any-start"
        return PromptTexts(name, clean, corrupted, answers, wrongs, groups)


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
