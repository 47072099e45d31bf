"""Distillation on real text (`--data.*`): local .txt / .jsonl / .parquet / .csv files or a
`datasets` hub corpus, tokenized with the teacher's tokenizer, packed into blocks of
`block_size` tokens, with a held-out split, optionally mixed with the synthetic task corpus
(`task_fraction`) so that the task the circuits are read on stays in distribution.

Map-style (default): the packed blocks are a `datasets.Dataset`, served by the same
`StepSampler` as the synthetic corpus, so batches are a function of (seed, step) and `--resume`
is exact. Streaming (`streaming`): blocks are packed on the fly from a `datasets`
IterableDataset (shuffled in a buffer from the seed); the held-out split is the stream's first
`val_blocks` blocks; a resumed run reads the stream again from its start and skips the blocks
already trained on, so it sees the same batches (exact, at the cost of re-reading them)."""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets
from torch.utils.data import DataLoader, IterableDataset

from kdmech.distill.data import CorpusDataModule, corpus_dataset
from kdmech.errors import KdmechError
from kdmech.tasks.forms import ModelKind, prompt_form

BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
            ".csv": "csv"}


@dataclass(frozen=True)
class DataOptions:
    """The text to distil on (default: neither files nor dataset, the synthetic task corpus)."""

    files: list[str] = field(default_factory=list)
    """Local corpus files, all of one format: .txt (one document a line), .jsonl/.json,
    .parquet or .csv (the text in `text_column`)."""
    dataset: str | None = None
    """A `datasets` hub corpus (e.g. wikitext, Salesforce/wikitext), instead of files."""
    config: str | None = None
    """The hub corpus' configuration (e.g. wikitext-103-raw-v1)."""
    split: str = "train"
    """The hub corpus' split the blocks (and the held-out part) come from."""
    text_column: str = "text"
    """The column holding the text (.jsonl, .parquet, .csv and hub corpora)."""
    block_size: int | None = None
    """Tokens per training sequence (documents are concatenated, separated by EOS/SEP, and cut
    into blocks of this length, the model's special tokens included); default: the teacher's
    context length (longer is refused)."""
    val_fraction: float = 0.05
    """The share of packed blocks held out for validation (map-style; the last ones)."""
    val_blocks: int = 64
    """Held-out blocks with `streaming` (the stream's first ones)."""
    streaming: bool = False
    """Read the corpus as a stream (corpora larger than memory)."""
    shuffle_buffer: int = 10000
    """Blocks in the streaming shuffle buffer."""
    task_fraction: float = 0.0
    """The share of training (and held-out) sequences drawn from the synthetic task corpus."""

    def __post_init__(self):
        if self.files and self.dataset:
            raise KdmechError("give --data.files or --data.dataset, not both")
        if self.block_size is not None and self.block_size < 4:
            raise KdmechError(f"data.block_size must be ≥ 4, got {self.block_size}")
        if not 0 < self.val_fraction < 1:
            raise KdmechError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.task_fraction < 1:
            raise KdmechError(f"data.task_fraction must be in [0, 1), got {self.task_fraction}")
        if self.val_blocks < 1 or self.shuffle_buffer < 1:
            raise KdmechError("data.val_blocks and data.shuffle_buffer must be ≥ 1")

    @property
    def enabled(self) -> bool:
        return bool(self.files or self.dataset)


def data_files(options: DataOptions) -> tuple[list[str], str]:
    """The files `options.files` names (globs expanded) and their `datasets` builder; missing
    files or mixed formats: one-line KdmechError (checked before the teacher is loaded)."""
    paths = sorted({p for f in options.files for p in (glob.glob(f) if glob.has_magic(f) else [f])})
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths or missing:
        raise KdmechError(f"data file not found: {missing[0] if missing else options.files}")
    kinds = {BUILDERS.get(Path(p).suffix.lower()) for p in paths}
    if None in kinds or len(kinds) != 1:
        raise KdmechError(f"data files must all be one of {sorted(BUILDERS)}, got {paths}")
    return paths, kinds.pop()


FALLBACK_BLOCK = 128
"""block_size when the teacher's context length cannot be read from its config."""


def context_length(teacher: str) -> int | None:
    """The teacher's longest sequence (n_positions, max_position_embeddings), from its config
    alone (no weights loaded); None when the config does not say or cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(teacher)
    except Exception:  # noqa: BLE001 - an unreadable config is reported when the teacher loads
        return None
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def check_data(options: DataOptions, teacher: str) -> DataOptions:
    """`options` with its block size fitted to the teacher (default: its context length; longer
    refused in one line) and its files checked, before anything is loaded."""
    if not options.enabled:
        return options
    if options.files:
        data_files(options)
    context = context_length(teacher)
    if options.block_size is None:
        return replace(options, block_size=context or FALLBACK_BLOCK)
    if context is not None and options.block_size > context:
        raise KdmechError(f"data.block_size {options.block_size} is longer than the teacher's context of {context} "
                          f"tokens; give at most {context} (the default)")
    return options


def load_text(options: DataOptions, streaming: bool | None = None):
    """The corpus' documents (a Dataset, or an IterableDataset when streaming), one column, text.
    Missing files, mixed formats, a missing column or an unreachable hub: one-line KdmechError."""
    import datasets

    streaming = options.streaming if streaming is None else streaming
    if options.files:
        paths, builder = data_files(options)
        try:
            ds = datasets.load_dataset(builder, data_files=paths, split="train", streaming=streaming)
        except Exception as e:  # noqa: BLE001 - datasets' parse errors vary by format
            raise KdmechError(f"cannot read {paths[0]}{' ...' if len(paths) > 1 else ''} as {builder}: "
                              f"{' '.join(str(e).split())[:200]}") from None
        column = "text" if builder == "text" else options.text_column
    else:
        try:
            ds = datasets.load_dataset(options.dataset, options.config, split=options.split, streaming=streaming)
        except Exception as e:  # noqa: BLE001 - offline, unknown name, bad config: one line
            raise KdmechError(f"cannot load the dataset {options.dataset!r} (config {options.config}, split "
                              f"{options.split}) from the hub: {' '.join(str(e).split())[:200]}; check the name "
                              f"and the network, or give local files with --data.files") from None
        column = options.text_column
    names = ds.column_names if ds.column_names is not None else [column]
    if column not in names:
        raise KdmechError(f"the corpus has no column {column!r} (columns: {names}); set --data.text_column")
    ds = ds.select_columns([column])
    return ds.rename_column(column, "text") if column != "text" else ds


class Packer:
    """Documents → blocks of `block_size` ids, each framed as the model kind frames a text
    (BOS first for causal models when the tokenizer has one; [CLS] … [SEP] for masked ones),
    documents separated by EOS (causal) or SEP (masked)."""

    def __init__(self, tokenizer, block_size: int, kind: ModelKind):
        self.tokenizer, self.form = tokenizer, prompt_form(kind)
        self.inner = block_size - len(self.form.wrap(tokenizer, []))
        sep = tokenizer.eos_token_id if kind == "causal" else tokenizer.sep_token_id
        self.separator = [sep] if sep is not None else []
        if self.inner < 2:
            raise KdmechError(f"data.block_size {block_size} leaves no room for text")

    def blocks(self, texts) -> list[list[int]]:
        """The full blocks of `texts` (the rest, shorter than a block, is dropped)."""
        stream = []
        for text in texts:
            if text and text.strip():
                stream += self.tokenizer.encode(text, add_special_tokens=False) + self.separator
        return [self.form.wrap(self.tokenizer, stream[i: i + self.inner])
                for i in range(0, len(stream) - self.inner + 1, self.inner)]

    def iter_blocks(self, texts):
        """`blocks` for a stream of documents, lazily."""
        stream = []
        for text in texts:
            if text and text.strip():
                stream += self.tokenizer.encode(text, add_special_tokens=False) + self.separator
            while len(stream) >= self.inner:
                yield self.form.wrap(self.tokenizer, stream[: self.inner])
                stream = stream[self.inner:]


def _as_dataset(blocks: list[list[int]]) -> Dataset:
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})


def _task_blocks(tokenizer, n: int, seed: int, kind: ModelKind, block_size: int) -> Dataset:
    """`n` synthetic task sequences, right-padded to `block_size` (the mask hides the padding)."""
    task = corpus_dataset(tokenizer, n, seed, kind).with_format(None)
    width = len(task[0]["input_ids"])
    if width > block_size:
        raise KdmechError(f"data.block_size {block_size} is shorter than the task's sequences ({width} tokens)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Dataset.from_dict({"input_ids": [x + [pad] * (block_size - width) for x in task["input_ids"]],
                              "attention_mask": [m + [0] * (block_size - width) for m in task["attention_mask"]]})


def _mixed(text: Dataset, options: DataOptions, tokenizer, seed: int, kind: ModelKind) -> Dataset:
    """`text`'s blocks and, with a task fraction f, len(text)·f/(1-f) task sequences."""
    n_task = round(len(text) * options.task_fraction / (1 - options.task_fraction))
    parts = [text] + ([_task_blocks(tokenizer, n_task, seed, kind, options.block_size)] if n_task else [])
    return concatenate_datasets(parts).with_format("torch", columns=["input_ids", "attention_mask"])


class TextDataModule(CorpusDataModule):
    """Packed blocks of a text corpus (`DataOptions`), train and held-out; map-style blocks are
    served as the synthetic corpus is (`StepSampler`: exact resume)."""

    def __init__(self, tokenizer, options: DataOptions, batch_size: int = 64, seed: int = 0,
                 kind: ModelKind = "causal"):
        super().__init__(tokenizer, 0, 0, batch_size, seed, kind)
        self.options = options
        self.packer = Packer(tokenizer, options.block_size, kind)

    def setup(self, stage: str | None = None) -> None:
        o = self.options
        if o.streaming:
            val = list(itertools.islice(self._stream_blocks(0), o.val_blocks))
            if not val:
                raise KdmechError("the corpus holds less than one block of text; lower data.block_size")
            self.val_set = _mixed(_as_dataset(val), o, self.tokenizer, self.seed + 10_000, self.kind)
            return
        blocks = self.packer.blocks(load_text(o)["text"])
        n_val = max(1, round(len(blocks) * o.val_fraction))
        if len(blocks) <= n_val:
            raise KdmechError(f"the corpus packs into {len(blocks)} block(s) of {o.block_size} tokens: too few "
                              f"to hold {n_val} out; give more text or lower data.block_size")
        self.train_set = _mixed(_as_dataset(blocks[:-n_val]), o, self.tokenizer, self.seed, self.kind)
        self.val_set = _mixed(_as_dataset(blocks[-n_val:]), o, self.tokenizer, self.seed + 10_000, self.kind)

    def _stream_blocks(self, epoch: int):
        """The stream's packed blocks in corpus order, held-out ones first."""
        return self.packer.iter_blocks(row["text"] for row in load_text(self.options, streaming=True))

    def train_dataloader(self) -> DataLoader:
        if not self.options.streaming:
            return super().train_dataloader()
        t = self.trainer
        accumulate = t.accumulate_grad_batches if t is not None else 1
        skip = (t.global_step * accumulate * self.batch_size) if t is not None else 0
        replicas, rank = (t.world_size, t.global_rank) if t is not None else (1, 0)
        return DataLoader(StreamingBlocks(self, skip, replicas, rank), batch_size=self.batch_size)


class StreamingBlocks(IterableDataset):
    """Training blocks from a stream: the held-out blocks skipped, shuffled in a buffer seeded
    from (seed, pass over the corpus), task sequences mixed in at the task fraction, `skip`
    blocks (those a resumed run trained on) dropped, every `replicas`-th block for this rank.
    The stream restarts when exhausted (training is bounded by max_steps)."""

    def __init__(self, module: TextDataModule, skip: int, replicas: int = 1, rank: int = 0):
        self.module, self.skip, self.replicas, self.rank = module, skip, replicas, rank

    def _blocks(self):
        m, o = self.module, self.module.options
        for epoch in itertools.count():
            g = torch.Generator().manual_seed(m.seed * 1_000_003 + epoch)
            buffer, produced = [], False
            for block in itertools.islice(m._stream_blocks(epoch), o.val_blocks, None):
                produced = True
                buffer.append(block)
                if len(buffer) >= o.shuffle_buffer:
                    yield buffer.pop(int(torch.randint(len(buffer), (), generator=g)))
            while buffer:
                yield buffer.pop(int(torch.randint(len(buffer), (), generator=g)))
            if not produced:
                raise KdmechError("the stream holds no training blocks beyond the held-out ones; "
                                  "lower data.val_blocks or data.block_size")

    def _with_task(self):
        m, o = self.module, self.module.options
        if not o.task_fraction:
            yield from self._blocks()
            return
        # deterministic interleaving: a task sequence whenever the running share falls short
        task = _task_blocks(m.tokenizer, 2048, m.seed, m.kind, o.block_size)
        n, n_task, text = 0, 0, self._blocks()
        while True:
            if n_task < o.task_fraction * (n + 1):
                row = task[n_task % len(task)]
                n_task += 1
                yield row["input_ids"], row["attention_mask"]
            else:
                block = next(text)
                yield block, [1] * len(block)
            n += 1

    def __iter__(self):
        for i, (ids, mask) in enumerate(itertools.islice(
                (x if isinstance(x, tuple) else (x, [1] * len(x)) for x in self._with_task()),
                self.skip * self.replicas, None)):
            if i % self.replicas == self.rank:
                yield {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
