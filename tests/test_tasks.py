import re

import pytest
import torch

from kdmech.errors import KdmechError
from kdmech.tasks import (NumeralTask, PromptSet, PromptTexts, check_same_tokenization,
                          tokenize_prompts)
from kdmech.tasks.numerals import training_corpus


def numbers(text):
    return [int(x) for x in re.findall(r"\d+", text)]


def test_numeral_prompts_follow_the_template():
    texts = NumeralTask(per_type=20, seed=1).prompts()
    assert len(texts.clean) == 60 and set(texts.groups) == {"done", "lost", "names"}
    for clean, corrupt, ans, wrong, group in zip(texts.clean, texts.corrupted, texts.answers,
                                                 texts.wrong_answers, texts.groups):
        seq = numbers(clean)
        assert len(seq) == 4 and 1 <= seq[0] <= 8
        assert seq == list(range(seq[0], seq[0] + 4))
        assert int(ans) == seq[-1] + 1 and int(wrong) == seq[-1]
        assert clean.endswith({"done": "done in", "lost": "lost in", "names": "born in"}[group])
        r = numbers(corrupt)
        assert all(1 <= x <= 12 for x in r) and r[3] - 1 != r[2]
        # every non-number word is unchanged
        assert re.sub(r"\d+", "#", clean) == re.sub(r"\d+", "#", corrupt)


def test_tokenized_set_has_one_length_and_last_position(tokenizer):
    ps = tokenize_prompts(NumeralTask(per_type=5).prompts(), tokenizer)
    assert ps.clean.shape == ps.corrupted.shape
    assert (ps.positions == ps.clean.shape[1] - 1).all()
    assert (ps.clean[:, 0] == tokenizer.bos_token_id).all()
    for i in range(len(ps)):
        assert tokenizer.decode([int(ps.answers[i])]) == ps.texts.answers[i].strip()


def test_prompt_set_json_round_trip(tmp_path, prompts):
    prompts.save(tmp_path / "p.json")
    back = PromptSet.load(tmp_path / "p.json")
    for name in ("clean", "corrupted", "answers", "wrong_answers", "positions"):
        assert torch.equal(getattr(back, name), getattr(prompts, name))
    assert back.texts == prompts.texts


def test_multi_token_answer_is_refused_with_the_prompt_named(tokenizer):
    texts = PromptTexts("t", ["Van done in"], ["Van done in"], [" 5 6"], [" 4"])
    with pytest.raises(KdmechError, match=r"answer ' 5 6' of prompt 'Van done in' is 2 tokens"):
        tokenize_prompts(texts, tokenizer)


def test_unequal_clean_and_corrupted_lengths_are_refused(tokenizer):
    texts = PromptTexts("t", ["Van done in 1 ."], ["Van done in"], [" 5"], [" 4"])
    with pytest.raises(KdmechError, match="differ in length"):
        tokenize_prompts(texts, tokenizer)


def test_pair_with_different_tokenizations_is_refused(tokenizer):
    from kdmech.models.tokenizer import build_word_tokenizer

    other = build_word_tokenizer()
    vocab = other.backend_tokenizer.get_vocab()
    assert vocab  # a second tokenizer that maps the same words to other ids:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    shuffled = {w: (i + 7) % len(vocab) for w, i in vocab.items()}
    core = Tokenizer(models.WordLevel(shuffled, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    student_tok = PreTrainedTokenizerFast(tokenizer_object=core, name_or_path="shuffled",
                                          unk_token="<unk>", bos_token="<bos>")
    texts = NumeralTask(per_type=2).prompts()
    with pytest.raises(KdmechError, match="tokenize prompt .* differently"):
        check_same_tokenization(tokenizer, student_tok, texts)
    assert len(check_same_tokenization(tokenizer, other, texts)) == 6


def test_training_corpus_leaves_shift_room():
    corpus = training_corpus(2000, seed=0)
    values = [x for line in corpus for x in numbers(line)]
    assert min(values) >= 1 and max(values) <= 12  # ranges beyond 12 stay unseen
    assert all(2 <= len(numbers(line)) <= 5 for line in corpus)


def test_unknown_prompt_type_is_refused():
    with pytest.raises(KdmechError, match="numeral prompt type 'eaten' is unknown"):
        NumeralTask(types=("eaten",))
