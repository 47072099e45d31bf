"""The prompt-set type every analysis consumes (docs/method.md §2.1).

A prompt set is text first (what a task generates) and token ids second (what a model sees).
`tokenize_prompts` turns the text into ids for one tokenizer and enforces the task contract:
answers and wrong answers are single tokens, clean and corrupted prompts have equal length,
and every prompt of the set has one length (so per-position means exist). A violation is a
`KdmechError` naming the offending prompt, never a silent skip. A task may declare its set
`ragged` (IOI over Wang et al.'s templates): its prompts are then right-padded to one length,
for causal models only, and each is read at its own last token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdmech.errors import KdmechError
from kdmech.tasks.forms import ModelKind, prompt_form
from kdmech.tasks.split_digits import space_before_answers


@dataclass(frozen=True)
class PromptTexts:
    """A task's prompts as text. `answers`/`wrong_answers` are continuations as a tokenizer
    should see them (with the leading space GPT-2 style tokenizers need, e.g. ``" 5"``)."""

    task: str
    clean: list[str]
    corrupted: list[str]
    answers: list[str]
    wrong_answers: list[str]
    groups: list[str] = field(default_factory=list)
    metric: str = "logit_diff"
    """logit_diff, or greater_than (then each wrong answer is the threshold year XX)."""
    ragged: bool = False
    """Prompts may differ in length: tokenized right-padded (pad token, else EOS) and read at
    each prompt's own last token. Causal models only: a padded tail cannot reach earlier
    positions there, but a bidirectional encoder would attend to it."""

    def __post_init__(self):
        n = len(self.clean)
        sizes = {len(self.corrupted), len(self.answers), len(self.wrong_answers)}
        if sizes != {n} or (self.groups and len(self.groups) != n):
            raise KdmechError(f"task {self.task!r}: clean, corrupted, answers and wrong answers "
                              f"must have one length each, got {n} and {sorted(sizes)}")
        if n == 0:
            raise KdmechError(f"task {self.task!r} produced no prompts")

    def subset(self, keep: list[int]) -> "PromptTexts":
        pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
        return PromptTexts(self.task, pick(self.clean), pick(self.corrupted), pick(self.answers),
                           pick(self.wrong_answers), pick(self.groups) if self.groups else [],
                           self.metric, self.ragged)


@dataclass(frozen=True)
class PromptSet:
    """Token ids of a task for one tokenizer. Shapes: clean/corrupted [N, T]; answers,
    wrong_answers and positions [N]. `positions` is where the logit difference is read."""

    texts: PromptTexts
    clean: torch.Tensor
    corrupted: torch.Tensor
    answers: torch.Tensor
    wrong_answers: torch.Tensor
    positions: torch.Tensor
    kind: ModelKind = "causal"
    year_ids: torch.Tensor | None = None
    """greater_than: token ids of the endings 00..99."""

    @property
    def metric(self) -> str:
        return self.texts.metric

    @property
    def thresholds(self) -> torch.Tensor:
        """greater_than: the year XX of each prompt."""
        return torch.tensor([int(w) for w in self.texts.wrong_answers], device=self.device)

    @property
    def task(self) -> str:
        return self.texts.task

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def seq_len(self) -> int:
        return self.clean.shape[1]

    def subset(self, keep: list[int]) -> "PromptSet":
        idx = torch.as_tensor(keep, dtype=torch.long, device=self.device)
        return PromptSet(self.texts.subset(list(keep)), self.clean[idx], self.corrupted[idx],
                         self.answers[idx], self.wrong_answers[idx], self.positions[idx], self.kind,
                         self.year_ids)

    @property
    def device(self) -> torch.device:
        return self.clean.device

    def to(self, device: torch.device | str) -> "PromptSet":
        """The same prompts with every tensor on `device` (self when already there)."""
        device = torch.device(device)
        if self.clean.device == device:
            return self
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return PromptSet(self.texts, move(self.clean), move(self.corrupted), move(self.answers),
                         move(self.wrong_answers), move(self.positions), self.kind, move(self.year_ids))

    def for_model(self, model) -> "PromptSet":
        """The same prompts on the device of `model`'s parameters: the one boundary where
        prompts meet a model (profiles, the ablation engine, the teacher filter). Prompt sets
        are made and saved on the CPU; every tensor an analysis makes derives its device from
        these or from the model's activations."""
        return self.to(device_of(model))

    def to_json(self) -> dict:
        return {
            "task": self.task, "kind": self.kind,
            "clean_ids": self.clean.tolist(), "corrupted_ids": self.corrupted.tolist(),
            "answer_ids": self.answers.tolist(), "wrong_answer_ids": self.wrong_answers.tolist(),
            "positions": self.positions.tolist(),
            "clean_text": self.texts.clean, "corrupted_text": self.texts.corrupted,
            "answer_text": self.texts.answers, "wrong_answer_text": self.texts.wrong_answers,
            "groups": self.texts.groups, "metric": self.metric, "ragged": self.texts.ragged,
            "year_ids": self.year_ids.tolist() if self.year_ids is not None else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> "PromptSet":
        texts = PromptTexts(d["task"], d["clean_text"], d["corrupted_text"], d["answer_text"],
                            d["wrong_answer_text"], d.get("groups", []), d.get("metric", "logit_diff"),
                            d.get("ragged", False))
        t = lambda k: torch.tensor(d[k], dtype=torch.long, device="cpu")  # noqa: E731
        return cls(texts, t("clean_ids"), t("corrupted_ids"), t("answer_ids"),
                   t("wrong_answer_ids"), t("positions"), d["kind"],
                   t("year_ids") if d.get("year_ids") is not None else None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "PromptSet":
        return cls.from_json(json.loads(Path(path).read_text()))


def batch_rows(max_batch_tokens: int, seq_len: int, default: int) -> int:
    """Prompt rows one analysis forward takes: `default` without a budget (`max_batch_tokens`
    0), else at most max(1, max_batch_tokens // seq_len) (`AnalysisOptions.max_batch_tokens`)."""
    if not max_batch_tokens:
        return default
    return max(1, min(default, max_batch_tokens // seq_len))


def device_of(model) -> torch.device:
    """Where a model (an `nn.Module`) keeps its parameters."""
    return next(model.parameters()).device


def resolve_device(name: str = "auto") -> torch.device:
    """A device a user names: auto (the first GPU when torch sees one, else the CPU), cpu,
    cuda, cuda:N, mps. One line when that device is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdmechError(f"device {name!r} is not a device; accepted: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise KdmechError(f"device {name!r} asked for, but torch sees "
                          f"{torch.cuda.device_count()} CUDA device(s); use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KdmechError(f"device {name!r} asked for, but torch sees no MPS device; use auto or cpu")
    return device


def _single_token(tokenizer, text: str, what: str, prompt: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise KdmechError(f"{what} {text!r} of prompt {prompt!r} is {len(ids)} tokens "
                          f"{tokenizer.convert_ids_to_tokens(ids)} for tokenizer "
                          f"{tokenizer.name_or_path!r}; the task needs single known tokens")
    return ids[0]


def _encode_prompt(tokenizer, text: str, kind: ModelKind) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise KdmechError(f"prompt {text!r} has words outside the vocabulary of tokenizer "
                          f"{tokenizer.name_or_path!r}: {tokenizer.convert_ids_to_tokens(ids)}")
    # causal models read from a BOS token, as TransformerLens does by default
    return prompt_form(kind).wrap(tokenizer, ids)


def tokenize_prompts(texts: PromptTexts, tokenizer, kind: ModelKind = "causal") -> PromptSet:
    """Tokenize and validate a task's prompts for one tokenizer (see module docstring). For a
    tokenizer that splits the space before an answer from it (Qwen, Llama 3: " 5" is " " "5"),
    the causal form ends each prompt in that space and reads the bare answer
    (`split_digits.space_before_answers`); the set's texts say so."""
    clean, corrupted, answers, wrongs, positions = [], [], [], [], []
    length, form = None, prompt_form(kind)
    if not form.cloze:
        texts = space_before_answers(texts, tokenizer)
    for c, r, a, w in zip(texts.clean, texts.corrupted, texts.answers, texts.wrong_answers):
        ci, ri = _encode_prompt(tokenizer, c, kind), _encode_prompt(tokenizer, r, kind)
        if len(ci) != len(ri):
            raise KdmechError(f"clean prompt {c!r} ({len(ci)} tokens) and its corrupted prompt "
                              f"{r!r} ({len(ri)} tokens) differ in length for tokenizer "
                              f"{tokenizer.name_or_path!r}; they must be equal")
        length = len(ci) if length is None else length
        if len(ci) != length and not texts.ragged:
            raise KdmechError(f"prompt {c!r} is {len(ci)} tokens but the set's prompts are "
                              f"{length}; every prompt of a set must have one length")
        positions.append(form.read_position(tokenizer, ci, c))
        answers.append(_single_token(tokenizer, a, "answer", c))
        wrongs.append(_single_token(tokenizer, w, "wrong answer", c))
        clean.append(ci)
        corrupted.append(ri)
    if texts.ragged:
        clean, corrupted = _pad_right(texts, tokenizer, kind, clean, corrupted)
    t = lambda x: torch.tensor(x, dtype=torch.long, device="cpu")  # noqa: E731
    year_ids = None
    if texts.metric == "greater_than":
        year_ids = t([_single_token(tokenizer, f"{i:02d}", "year ending", texts.clean[0]) for i in range(100)])
        _check_years_split(tokenizer, texts, clean, corrupted, wrongs, positions, year_ids)
    return PromptSet(texts, t(clean), t(corrupted), t(answers), t(wrongs), t(positions), form.kind, year_ids)


def _check_years_split(tokenizer, texts: PromptTexts, clean, corrupted, wrongs, positions,
                       year_ids) -> None:
    """greater_than: the prompt ends on the century YY (read at its position), and its year
    YYXX must be that token followed by the ending XX (the corruption's by 01). A BPE may merge
    a year otherwise (GPT-2: " 1440" is one token, " 1102" is " 110" "2") and still keep the
    lengths equal."""
    for c, r, ci, ri, w, p in zip(texts.clean, texts.corrupted, clean, corrupted, wrongs, positions):
        for prompt, ids, ending in ((c, ci[:p + 1], w), (r, ri[:p + 1], int(year_ids[1]))):
            if (ids[-1], ending) not in set(zip(ids, ids[1:])):
                raise KdmechError(f"the year of prompt {prompt!r} is not the century "
                                  f"{tokenizer.convert_ids_to_tokens(ids[-1])!r} followed by the "
                                  f"ending {tokenizer.convert_ids_to_tokens(ending)!r} for tokenizer "
                                  f"{tokenizer.name_or_path!r}: {tokenizer.convert_ids_to_tokens(ids)}")


def _pad_right(texts: PromptTexts, tokenizer, kind: ModelKind, clean: list, corrupted: list):
    """Right-pad a ragged set's ids to its longest prompt (positions stay each prompt's own)."""
    if not prompt_form(kind).padding_hidden and len({len(ids) for ids in clean}) > 1:
        raise KdmechError(f"task {texts.task!r} has prompts of different lengths, which kdmech "
                          f"pads on the right; a masked LM (BERT) would attend to that padding, so "
                          f"this prompt set is for causal models only")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise KdmechError(f"task {texts.task!r} has prompts of different lengths but tokenizer "
                          f"{tokenizer.name_or_path!r} has neither a pad nor an EOS token to pad with")
    width = max(len(ids) for ids in clean)
    fill = lambda rows: [ids + [pad] * (width - len(ids)) for ids in rows]  # noqa: E731
    return fill(clean), fill(corrupted)


def check_same_tokenization(teacher_tok, student_tok, texts: PromptTexts,
                            kind: ModelKind = "causal") -> PromptSet:
    """Tokenize for both models and insist the ids agree: matching and alignment compare the
    two models position by position, which only means something on identical tokens."""
    a = tokenize_prompts(texts, teacher_tok, kind)
    if student_tok is teacher_tok:  # one tokenizer (distillation's students share the teacher's)
        return a
    b = tokenize_prompts(texts, student_tok, kind)
    for name in ("clean", "corrupted", "answers", "wrong_answers"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or not torch.equal(x, y):
            rows = (x != y).reshape(x.shape[0], -1).any(1).nonzero() if x.shape == y.shape else [[0]]
            i = int(rows[0][0])
            raise KdmechError(f"teacher and student tokenize prompt {texts.clean[i]!r} "
                              f"differently ({name}); a pair must share one tokenization")
    return a
