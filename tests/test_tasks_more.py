import pytest

from kdmech.errors import KdmechError
from kdmech.tasks import IOITask, NumeralTask, get_task, tokenize_prompts
from kdmech.tasks.numerals import MONTHS, NUMBER_WORDS


def test_ioi_prompts(tokenizer):
    texts = IOITask(n=40, seed=2).prompts()
    assert set(texts.groups) == {"ABBA", "BABA"}
    for clean, corrupt, io, s in zip(texts.clean, texts.corrupted, texts.answers, texts.wrong_answers):
        words = clean.replace(",", "").split()
        io, s = io.strip(), s.strip()
        assert words.count(s) == 2 and words.count(io) == 1 and clean.endswith(" to")
        names = [w for w in corrupt.replace(",", "").split() if w[0].isupper() and w not in ("When", "After", "Then")]
        assert len(set(names)) == 3  # ABC: three distinct names
    ps = tokenize_prompts(texts, tokenizer)
    assert ps.clean.shape == ps.corrupted.shape


@pytest.mark.parametrize("fmt,words", [("words", NUMBER_WORDS), ("months", [None, *MONTHS])])
def test_numeral_formats(tokenizer, fmt, words):
    texts = NumeralTask(per_type=5, fmt=fmt).prompts()
    for clean, ans, wrong in zip(texts.clean, texts.answers, texts.wrong_answers):
        items = [w.rstrip(".") for w in clean.split() if w.rstrip(".") in words]
        idx = [words.index(w) for w in items]
        assert idx == list(range(idx[0], idx[0] + 4))
        assert ans.strip() == words[idx[-1] + 1] and wrong.strip() == words[idx[-1]]
    tokenize_prompts(texts, tokenizer)


def test_impossible_numeral_settings_are_refused():
    with pytest.raises(KdmechError, match="counts to 12"):
        NumeralTask(fmt="months", start_max=10)
    with pytest.raises(KdmechError, match="task 'sums' is unknown"):
        get_task("sums")


def test_longer_and_shifted_sequences():
    texts = NumeralTask(per_type=3, n_items=7, start_min=20, start_max=40).prompts()
    for clean, ans in zip(texts.clean, texts.answers):
        nums = [int(w.rstrip(".")) for w in clean.split() if w.rstrip(".").isdigit()]
        assert len(nums) == 7 and 20 <= nums[0] <= 40 and int(ans) == nums[-1] + 1
