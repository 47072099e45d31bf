"""`kdmech distill --init importance` end to end (GPT-2, BERT, Llama): the teacher scored on the
task prompts or on `--data` text, the ranking and scores in provenance.json, the birth in the
W&B config and in the report; `--capacity.params` and `--capacity.rounds` through the command
line; the one-line refusals."""

import glob
import json

import pytest
import torch

from kdmech.cli import main
from kdmech.models import TinyBertSpec, TinyLlamaSpec, build_word_tokenizer
from kdmech.models.importance import Importance, block_importance
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.wandb_offline import offline_config

QUICK = ["--training.steps", "2", "--training.n_train", "32", "--training.batch_size", "8", "--progress", "false"]
ANALYSIS = ["--analysis.every_n_steps", "2", "--analysis.per_type", "16", "--analysis.min_prompts", "8",
            "--analysis.circuits", "false"]
NO_ANALYSIS = ["--analysis.enabled", "false"]


def _prov(out, name):
    return json.loads((out / "students" / name / "provenance.json").read_text())


def _wandb_birth(out):
    (run,) = glob.glob(str(out / "wandb" / "offline-run-*"))
    return offline_config(run)["kdmech"]["birth"]


def test_gpt2_importance_on_the_task_prompts_in_provenance_wandb_and_report(trained_teacher, tmp_path):
    from kdmech.report.html import write_report

    teacher, _ = trained_teacher
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--init", "importance",
                 "--capacity.depth", "0.5", "--capacity.width", "0.5", "--capacity.heads", "0.5", "--name", "imp",
                 "--wandb", "offline", *QUICK, *ANALYSIS]) == 0
    prov = _prov(out, "imp")
    imp = Importance.from_json(prov["importance"])
    # independently: the task's prompts tokenized here, one plain bypass score per block
    from kdmech.models import load_lm

    model, tok, _ = load_lm(str(teacher))
    ids = tokenize_prompts(NumeralTask(per_type=16).prompts(), tok).clean
    expected = block_importance(model.eval(), ids, torch.ones_like(ids))
    assert imp.sequences == len(ids) and "numerals prompts" in imp.data
    assert torch.allclose(torch.tensor(imp.blocks), torch.tensor(expected), rtol=1e-4)
    assert prov["layer_map"] == {str(i): t for i, t in enumerate(imp.layers(2))}
    assert prov["heads_kept"] == {str(i): imp.kept_heads(t, 2) for i, t in enumerate(imp.layers(2))}
    assert prov["parameter_ratio"] == pytest.approx(prov["parameters"] / prov["teacher_parameters"])
    birth = _wandb_birth(out)["imp"]
    assert birth["init"] == "importance" and birth["importance"]["layer_ranking"] == imp.layer_ranking()
    assert birth["layer_map"] == prov["layer_map"] and birth["parameter_ratio"] == pytest.approx(prov["parameter_ratio"])
    page = write_report(out).read_text()
    section = page[page.index('id="initialisation"'):page.index('id="alignment-over-training"')]
    assert "importance" in section and str(imp.layer_ranking()) in section and f"{prov['parameter_ratio']:.4f}" in section


def _saved(tmp_path, spec, name):
    tok = build_word_tokenizer()
    folder = tmp_path / name
    spec.build(tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_bert_importance_calibrated_on_data_text(tmp_path):
    teacher = _saved(tmp_path, TinyBertSpec(n_layer=4, n_head=4, n_embd=32), "bert")
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"one two three four five six seven eight {i % 7}" for i in range(40)))
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--init", "importance", "--name", "b",
                 "--capacity.depth", "0.5", "--data", str(text), "--data.block_size", "16",
                 "--importance.samples", "5", "--importance.metric", "cosine", "--wandb", "offline",
                 *QUICK, *NO_ANALYSIS]) == 0
    imp = _prov(out, "b")["importance"]
    assert imp["data"] == f"5 blocks of 16 tokens of {text}" and imp["tokens"] == 80 and imp["metric"] == "cosine"
    assert _wandb_birth(out)["b"]["importance"]["data"] == imp["data"]


def test_llama_importance_keeps_whole_kv_groups(tmp_path):
    teacher = _saved(tmp_path, TinyLlamaSpec(n_layer=4, n_head=4, n_embd=32, n_kv_head=2), "llama")
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--init", "importance", "--name", "l",
                 "--capacity.depth", "0.5", "--capacity.heads", "0.5", "--wandb", "offline",
                 *QUICK, *NO_ANALYSIS]) == 0
    prov = _prov(out, "l")
    assert prov["shape"]["n_kv_head"] == 1 and prov["shape"]["n_head"] == 2
    for heads in prov["heads_kept"].values():  # one whole group: query heads 2g and 2g + 1
        assert heads in ([0, 1], [2, 3])
    assert _wandb_birth(out)["l"]["heads_kept"] == prov["heads_kept"]


@pytest.mark.slow
def test_rounds_prune_and_distil_each_round_with_its_analyses(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--init", "importance", "--name", "r",
                 "--capacity.depth", "0.5", "--capacity.width", "0.5", "--capacity.heads", "0.5",
                 "--capacity.rounds", "2", "--wandb", "disabled", *QUICK, *ANALYSIS]) == 0
    first, last = _prov(out, "r-round1"), _prov(out, "r")
    assert (first["round"], first["rounds"], last["round"]) == (1, 2, 2)
    assert first["shape"] == {"n_layer": 3, "d_model": 96, "d_mlp": 362, "n_head": 3}
    assert last["shape"] == {"n_layer": 2, "d_model": 64, "d_mlp": 256, "n_head": 2}
    assert last["parent"].endswith("r-round1")
    # layers and heads in the teacher's indices, through round 1's
    assert last["layer_map"] == {i: first["layer_map"][str(p)] for i, p in last["parent_layer_map"].items()}
    assert last["heads_kept"] == {i: [first["heads_kept"][str(last["parent_layer_map"][i])][h] for h in hs]
                                  for i, hs in last["parent_heads_kept"].items()}
    for name in ("r-round1", "r"):  # each round: a student with its checkpoint and its analyses
        assert (out / "analysis" / name / "step_2.json").exists() and (out / "checkpoints" / name / "last.ckpt").exists()


@pytest.mark.slow
def test_capacity_in_parameters_prints_the_shape_and_records_the_ratio(trained_teacher, tmp_path, capsys):
    teacher, _ = trained_teacher
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--capacity.params", "0.5",
                 "--wandb", "disabled", *QUICK, *NO_ANALYSIS]) == 0
    printed = capsys.readouterr().out
    prov = _prov(out, "p0.5")
    assert f"({prov['parameter_ratio']:.4f}, embeddings counted)" in printed
    assert prov["parameter_ratio"] <= 0.5 and prov["capacity"]["params"] == 0.5


def test_refusals_in_one_line(tmp_path, capsys):
    assert main(["distill", "--teacher", str(tmp_path), "--out", str(tmp_path / "o"), "--init", "random",
                 "--capacity.rounds", "2", "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert "init random copies nothing" in err and "\n" not in err.strip()
    assert main(["distill-shared", "--teacher", "x", "--out", str(tmp_path / "o"),
                 "--capacities", '[{"depth": 0.5, "rounds": 2}]', "--wandb", "disabled"]) == 2
    assert "capacity rounds 2 is for `kdmech distill`" in capsys.readouterr().err
    assert main(["distill", "--teacher", "x", "--out", str(tmp_path / "o"), "--capacity.params", "1.5"]) == 2
    assert "capacity params 1.5 is outside (0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_llama_importance_student_analysed_and_in_the_report(trained_llama_teacher, tmp_path):
    """On a trained tiny Llama (4 query heads in 2 KV groups): the importance student with its
    checkpoint analyses, its birth in the W&B config and in the report's Initialisation section."""
    from kdmech.report.html import write_report

    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(trained_llama_teacher), "--out", str(out), "--init", "importance",
                 "--name", "l", "--capacity.depth", "0.5", "--capacity.heads", "0.5", "--wandb", "offline",
                 *QUICK, *ANALYSIS]) == 0
    prov = _prov(out, "l")
    assert all(h in ([0, 1], [2, 3]) for h in prov["heads_kept"].values())
    assert (out / "analysis" / "l" / "step_2.json").exists()
    assert _wandb_birth(out)["l"]["importance"]["layer_ranking"] == prov["importance"]["layer_ranking"]
    page = write_report(out).read_text()
    section = page[page.index('id="initialisation"'):page.index('id="alignment-over-training"')]
    heads = "; ".join(f"L{i}←T{prov['layer_map'][i]}.H{h}" for i, h in prov["heads_kept"].items())
    assert str(prov["importance"]["layer_ranking"]) in section and heads in section
