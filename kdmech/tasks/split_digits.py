"""Tokenizers that keep the space apart from digits (docs/method.md §2.8).

GPT-2's BPE and kdmech's word tokenizer write " 5" as one token. Qwen2/2.5/3's BPE writes it as
the space token and the digit (" 5" → " " "5", " 12" → " " "1" "2": one digit a token), and
Llama 3's likewise with digits in groups of up to three (" 12" → " " "12"). A task's answer
" 5" is then no single token. For such tokenizers kdmech uses the form of the authors' Llama
script: the prompt ends in the space token and the answer is the bare digit, read at that
space. Two pieces:

- `space_before_answers`: the answer form, applied by `tokenize_prompts` to a whole causal
  prompt set when its answers need it (each " x" is the space token followed by x's own
  tokens), after checking that a prompt followed by a space tokenizes as the prompt's own ids
  followed by that space token;
- `NumeralTask.fit_to(tokenizer)` (`numerals.py`): the numeral task's digits kept to values whose bare form is one token
  (Qwen: 1..9, so starts 1..5 and corruptions 1..9; Llama 3: every value up to 999, nothing
  changes), so that answers are single tokens and clean and corrupted prompts keep one length.
  A task that cannot be fitted (its smallest answer is several tokens) is refused in one line
  naming the tokenizer and the answer.

Tokenizers that keep " 5" whole are left exactly as they were.
"""

from __future__ import annotations

from dataclasses import replace

from kdmech.errors import KdmechError


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def single(tokenizer, text: str) -> bool:
    """`text` is one known token."""
    got = ids(tokenizer, text)
    return len(got) == 1 and got[0] != tokenizer.unk_token_id


def splits_space(tokenizer, text: str) -> bool:
    """`text` (" x") is not one token but the space token followed by x's own tokens."""
    if not text.startswith(" ") or len(text) < 2 or single(tokenizer, text) or not single(tokenizer, " "):
        return False
    return ids(tokenizer, text) == ids(tokenizer, " ") + ids(tokenizer, text[1:])


def numeral_text(tokenizer, value: int) -> str:
    """How a numeral answer is written for `tokenizer`: " 5", or "5" where the space splits off."""
    return str(value) if splits_space(tokenizer, f" {value}") else f" {value}"


def largest_single_value(tokenizer, limit: int) -> int:
    """The largest k ≤ limit such that every bare numeral 1..k is one token (0 if "1" is not)."""
    k = 0
    while k < limit and single(tokenizer, str(k + 1)):
        k += 1
    return k


def space_before_answers(texts, tokenizer):
    """`texts` in the answer form `tokenizer` needs: unchanged where every answer that starts
    with a space is one token; otherwise, where such answers split into the space token and the
    rest, every prompt ends in the space and every answer is bare (see the module docstring)."""
    answers = [a for a in (*texts.answers, *texts.wrong_answers) if a.startswith(" ")]
    if not answers or len(answers) < len(texts.answers) + len(texts.wrong_answers):
        return texts
    if all(single(tokenizer, a) for a in answers) or not any(splits_space(tokenizer, a) for a in answers):
        return texts
    space = ids(tokenizer, " ")
    for prompt in (*texts.clean, *texts.corrupted):
        if ids(tokenizer, prompt + " ") != ids(tokenizer, prompt) + space:
            raise KdmechError(f"tokenizer {tokenizer.name_or_path!r} splits the space from answer "
                              f"{answers[0]!r}, but prompt {prompt + ' '!r} does not end in that space "
                              f"token ({tokenizer.convert_ids_to_tokens(ids(tokenizer, prompt + ' '))[-2:]}); "
                              f"the task cannot be read with this tokenizer")
    return replace(texts, clean=[c + " " for c in texts.clean], corrupted=[c + " " for c in texts.corrupted],
                   answers=[a[1:] for a in texts.answers], wrong_answers=[w[1:] for w in texts.wrong_answers])
