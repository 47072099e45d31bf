"""A word-level tokenizer over the task vocabulary, for the tiny offline teachers.

Built with the `tokenizers` library and wrapped as a `PreTrainedTokenizerFast`, so it saves and
loads with `save_pretrained`/`AutoTokenizer.from_pretrained` like any hub tokenizer. Words split
on whitespace and punctuation, so ``"3."`` is ``["3", "."]`` and ``" 5"`` is one token, as the
numeral task needs.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kdmech.tasks import greater_than, ioi, numerals

SPECIALS = ["<pad>", "<unk>", "<bos>", "[MASK]", "[CLS]", "[SEP]"]
PUNCTUATION = [".", ",", "?", "!"]


def task_vocabulary() -> list[str]:
    """Specials first (fixed ids), then every word the tasks can produce, numbers 0..99 and
    the zero-padded 00..09 (so unseen ranges and formats exist as tokens, untrained)."""
    words = set(numerals.words()) | set(ioi.words()) | set(greater_than.words())
    numbers = [str(i) for i in range(100)] + [f"{i:02d}" for i in range(10)]
    return SPECIALS + PUNCTUATION + numbers + sorted(words - set(numbers))


def build_word_tokenizer(name: str = "kdmech-word") -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(dict.fromkeys(task_vocabulary()))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Digit pairs are isolated, so a year "1732" is "17" "32" as in GPT-2 (greater-than task);
    # numbers below 100 stay whole.
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(), pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated")])
    core.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, name_or_path=name, pad_token="<pad>", unk_token="<unk>",
        bos_token="<bos>", eos_token="<bos>", mask_token="[MASK]", cls_token="[CLS]",
        sep_token="[SEP]",
        # The bridge rebuilds a tokenizer from the hub unless BOS prepending is already on.
        add_bos_token=True)
