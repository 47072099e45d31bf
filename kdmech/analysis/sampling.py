"""The authors' prompt sampling, for A under the authors preset (`authors_sampling`,
docs/method.md §12).

Their numeral notebook (`seq_alignment_metric.ipynb`) seeds Python's `random` with 42 once and
then draws three samples of 100 prompts, one after the other from the same generator:

1. `random.sample(prompts, 100)`: the prompts whose attention patterns and MLP outputs the
   matching reads (tokenized with BOS, `to_tokens(prepend_bos=True)`);
2. `random.sample(prompts_list, 100)`: the clean prompts of the influence (tokenized by the
   Hugging Face tokenizer, which adds no BOS, read at each prompt's last token);
3. `random.sample(prompts_list_2, 100)`: the corrupted prompts the ablation means are taken
   over (no BOS either), drawn independently of sample 2.

Here the populations are the analysis' prompts (after the teacher filter) and their corrupted
prompts, so the three samples are index samples of range(n) from one `random.Random(42)`,
which gives the same indices `random.sample` gives on any list of n items. A set of fewer than
100 prompts is taken whole. Masked LMs keep their [CLS] … [SEP] frame (their notebooks sample
causal models only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdmech.errors import KdmechError
from kdmech.tasks.prompt_set import PromptSet, PromptTexts

AUTHORS_SEED = 42
AUTHORS_SAMPLE = 100


@dataclass(frozen=True)
class AuthorsSamples:
    patterns: list[int]
    """Rows whose attention patterns and MLP outputs the matching reads (with BOS)."""
    influence: list[int]
    """Rows of the clean prompts the influence is measured on (without BOS)."""
    means: list[int]
    """Rows of the corrupted prompts the ablation means are taken over (without BOS)."""

    def to_json(self) -> dict:
        return {"seed": AUTHORS_SEED, "size": len(self.patterns), "patterns": self.patterns,
                "influence": self.influence, "means": self.means}


def authors_samples(n: int, size: int = AUTHORS_SAMPLE, seed: int = AUTHORS_SEED) -> AuthorsSamples:
    """The three index samples of n prompts (see the module docstring)."""
    rng = random.Random(seed)
    k = min(size, n)
    return AuthorsSamples(rng.sample(range(n), k), rng.sample(range(n), k), rng.sample(range(n), k))


def without_bos(prompts: PromptSet, bos_id: int | None) -> PromptSet:
    """The prompts without the BOS token kdmech prepends to causal prompts (positions shift
    by one); masked prompts and prompts without a BOS (`bos_id` None) are returned as they are."""
    if prompts.kind != "causal" or bos_id is None:
        return prompts
    if not (bool((prompts.clean[:, 0] == bos_id).all()) and bool((prompts.corrupted[:, 0] == bos_id).all())):
        raise KdmechError(f"the prompts of {prompts.task!r} do not all start with BOS id {bos_id}")
    texts: PromptTexts = prompts.texts
    return PromptSet(texts, prompts.clean[:, 1:], prompts.corrupted[:, 1:], prompts.answers,
                     prompts.wrong_answers, prompts.positions - 1, prompts.kind, prompts.year_ids)

