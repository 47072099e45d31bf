"""Indirect-object identification (Wang et al. 2022), docs/method.md §2.4.

"When Mary and John went to the store, John gave a drink to" → " Mary" (the indirect object,
IO) versus " John" (the subject, S); LD = logit(IO) − logit(S) at the last token. Each prompt
is an ABBA or BABA ordering of the two names. The corrupted prompt ("ABC") replaces every name
by a random name, all three distinct, keeping the rest.

Two template sets (`IOITask.templates`):
- ``kdmech`` (default): three templates of one length in words, with a short name list, so
  every prompt of a set has one token length and per-position means exist.
- ``wang``: the 15 BABA templates of Wang et al. (2022) as the paper's authors use them
  (`IOIDataset` in their IOI notebooks), each also in its ABBA mirror (the two names of the
  first clause swapped), with the 99 names, 8 places and 8 objects of their list. The templates
  differ in length, so the set is ragged: prompts are right-padded for causal models and read
  at their own last token (see `PromptTexts.ragged`); mean ablation then averages position by
  position across templates, where the authors' upstream code averages within each template.
  Masked LMs would attend to the padding, so BERT pairs are refused this set.
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

# Wang et al.'s BABA templates in the slot form above: {A} and {B} are the first clause's two
# names (BABA: subject first), {C} the subject's second mention; the final "to [IO]" is the
# answer, so every prompt ends at "to". ABBA mirrors put the indirect object in {A}.
WANG_TEMPLATES = [
    "Then, {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {C} gave a {OBJECT} to",
    "Then, {A} and {B} were working at the {PLACE}. {C} decided to give a {OBJECT} to",
    "Then, {A} and {B} were thinking about going to the {PLACE}. {C} wanted to give a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {C} said to",
    "After {A} and {B} went to the {PLACE}, {C} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {C} decided to give it to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {C} decided to give the {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {C} gave a {OBJECT} to",
    "While {A} and {B} were commuting to the {PLACE}, {C} gave a {OBJECT} to",
    "After the lunch, {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {C} gave a {OBJECT} to",
    "Then, {A} and {B} had a long argument. Afterwards {C} said to",
    "The {PLACE} {A} and {B} went to had a {OBJECT}. {C} gave it to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {C} gave it to",
]
WANG_NAMES = [
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason",
    "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas",
    "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin", "Steven",
    "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber", "Brittany",
    "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany",
    "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen",
    "Patrick", "Sean", "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul",
    "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis",
    "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose", "Alexander", "Jesse", "Katie",
    "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia", "Cody", "Allison",
    "Bradley", "Samuel",
]
WANG_PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
WANG_OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]

TEMPLATE_SETS = {"kdmech": (TEMPLATES, NAMES, PLACES, OBJECTS),
                 "wang": (WANG_TEMPLATES, WANG_NAMES, WANG_PLACES, WANG_OBJECTS)}


def words() -> list[str]:
    out: set[str] = set()
    for templates, names, places, objects in TEMPLATE_SETS.values():
        out |= {w.strip(",.") for t in templates for w in t.split() if "{" not in w}
        out |= set(names) | set(places) | set(objects)
    return sorted(out)


@dataclass(frozen=True)
class IOITask:
    """`n` prompts, half ABBA and half BABA, over one template set (module docstring)."""

    n: int = 100
    seed: int = 0
    cloze: bool = False
    """BERT cloze form (docs/method.md §2.3): the final `to <IO>` becomes `to [MASK]`."""
    templates: str = "kdmech"
    """kdmech (three equal-length templates) or wang (Wang et al.'s 15, each in BABA and ABBA
    order; prompts differ in length)."""
    n_templates: int = 0
    """Use only the first k templates of the set (0 = all). The authors' `IOIDataset(prompt_type=
    "mixed")` keeps the first 15 // 2 = 7 in each order: `templates="wang", n_templates=7`."""

    def __post_init__(self):
        if self.n < 1:
            raise KdmechError(f"IOI needs n ≥ 1 prompts, got {self.n}")
        if self.templates not in TEMPLATE_SETS:
            raise KdmechError(f"IOI template set {self.templates!r} is unknown; accepted: "
                              f"{list(TEMPLATE_SETS)}")
        if not 0 <= self.n_templates <= len(TEMPLATE_SETS[self.templates][0]):
            raise KdmechError(f"IOI n_templates must be 0 (all) or 1..{len(TEMPLATE_SETS[self.templates][0])} "
                              f"for template set {self.templates!r}, got {self.n_templates}")

    def prompts(self) -> PromptTexts:
        rng = random.Random(self.seed)
        templates, names, places, objects = TEMPLATE_SETS[self.templates]
        templates = templates[:self.n_templates or None]
        clean, corrupted, answers, wrongs, groups = [], [], [], [], []
        for i in range(self.n):
            template = rng.choice(templates)
            io, s = rng.sample(names, 2)
            place, obj = rng.choice(places), rng.choice(objects)
            order = "ABBA" if i % 2 == 0 else "BABA"
            first, second = (io, s) if order == "ABBA" else (s, io)
            slot = " [MASK]" if self.cloze else ""
            clean.append(template.format(A=first, B=second, C=s, PLACE=place, OBJECT=obj) + slot)
            a, b, c = rng.sample(names, 3)
            corrupted.append(template.format(A=a, B=b, C=c, PLACE=place, OBJECT=obj) + slot)
            answers.append(f" {io}")
            wrongs.append(f" {s}")
            groups.append(order)
        name = "ioi-cloze" if self.cloze else "ioi"
        if self.templates != "kdmech":
            name += f"-{self.templates}" + (f"{self.n_templates}" if self.n_templates else "")
        return PromptTexts(name, clean, corrupted, answers, wrongs, groups,
                           ragged=self.templates != "kdmech")
