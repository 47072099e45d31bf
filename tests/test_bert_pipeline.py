"""`kdmech quickstart --family bert` end to end on a tiny BERT trained here: the teacher learns
the cloze numerals, the run writes the GPT-2 quickstart's output contract, logged numbers
recompute from prompts.json with a plain Hugging Face forward, post-LayerNorm refusals are
recorded, and W&B gets the same keys."""

import json

import pytest
import torch
from transformers import BertForMaskedLM

from kdmech.commands.distill import AnalysisSchedule, DistillTraining
from kdmech.commands.quickstart import quickstart
from kdmech.teacher import TeacherTraining
from kdmech.errors import KdmechError
from kdmech.models import build_word_tokenizer
from kdmech.tasks import NumeralTask, PromptSet, tokenize_prompts

NAME = "d0.5-w1-h1"


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bert") / "run"
    summary = quickstart(out, family="bert", depths=[0.5], teacher_training=TeacherTraining(),
                         student_training=DistillTraining(steps=40),
                         analysis=AnalysisSchedule(every_n_steps=20, circuit_every_n_steps=40, per_type=32,
                                                   min_prompts=32),
                         wandb="offline", progress=False)
    return out, summary


def _logits_at(model, prompts: PromptSet) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=prompts.clean).logits
    return logits[torch.arange(len(prompts)), prompts.positions]


def test_bert_teacher_solves_the_cloze_numerals(bert_run):
    out, summary = bert_run
    model = BertForMaskedLM.from_pretrained(out / "teacher").eval()  # plain HF, not kdmech's loader
    tok = build_word_tokenizer()
    assert summary["teacher"]["family"] == "bert" and summary["teacher"]["top1"] >= 0.9
    for task in (NumeralTask(seed=4321, cloze=True, renumber=False), NumeralTask(seed=4321, cloze=True)):
        prompts = tokenize_prompts(task.prompts(), tok, "masked")
        assert (prompts.clean[torch.arange(len(prompts)), prompts.positions] == tok.mask_token_id).all()
        assert (prompts.clean[:, 0] == tok.cls_token_id).all() and (prompts.clean[:, -1] == tok.sep_token_id).all()
        top1 = (_logits_at(model, prompts).argmax(-1) == prompts.answers).float().mean().item()
        assert top1 >= 0.9, (task, top1)


def test_bert_quickstart_writes_the_output_contract(bert_run):
    out, summary = bert_run
    for folder in ("teacher", f"students/{NAME}", f"analysis/{NAME}", f"pair-analysis/{NAME}",
                   f"timeline/{NAME}", "report", "wandb"):
        assert (out / folder).is_dir(), folder
    assert (out / "report" / "report.html").stat().st_size > 10_000
    student = json.loads((out / "students" / NAME / "config.json").read_text())
    assert student["model_type"] == "bert" and student["num_hidden_layers"] == 2
    (result,) = summary["students"]
    assert result["steps"] == [0, 20, 40] and 0 < result["A"] <= 1 and result["worst_node"]
    for step in (0, 20, 40):
        d = json.loads((out / "analysis" / NAME / f"step_{step}.json").read_text())
        assert d["task"] == "numerals-cloze-any-start" and d["ablation"] == "mean"
        assert set(d["influence"]["student"]) == {f"L{l}.H{h}" for l in range(2) for h in range(4)} | {"L0.MLP", "L1.MLP"}
    circuit = json.loads((out / "analysis" / NAME / "circuit_step_40.json").read_text())
    for who in ("teacher", "student"):
        c = circuit[who]
        assert c["edges_pruned"] is False and c["edges"] == [] and "post-LayerNorm" in c["edges_note"]
        assert c["completeness"] >= 80
        assert "post-LayerNorm" in circuit["probes"][who]["successor"]["error"]
        assert len(circuit["probes"][who]["similar_member"]) == (16 if who == "teacher" else 8)
    pair = json.loads((out / "pair-analysis" / NAME / "analysis.json").read_text())
    assert {"sensitivity", "noise", "shift", "alignment", "worst_drop"} <= set(pair)
    lo, hi = pair["alignment"]["ci95"]["A"]
    assert lo <= pair["alignment"]["A"] <= hi
    shifts = {row["shift"]: row for row in pair["shift"]}
    assert shifts["in-distribution"]["error"] == "" and shifts["in-distribution"]["teacher"]["top1"] >= 0.9
    assert shifts["range-20-40"]["n"] > 0  # cloze prompts keep their starts


def test_bert_logged_numbers_recompute_from_prompts_json(bert_run):
    out, _ = bert_run
    prompts = PromptSet.load(out / "analysis" / NAME / "prompts.json")
    assert prompts.kind == "masked"
    final = json.loads((out / "analysis" / NAME / "step_40.json").read_text())
    for who, path in (("teacher", out / "teacher"), ("student", out / "students" / NAME)):
        at = _logits_at(BertForMaskedLM.from_pretrained(path).eval(), prompts)
        rows = torch.arange(len(prompts))
        ld = (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()
        assert final["logit_diff"][who] == pytest.approx(ld, rel=1e-4), who


def test_bert_wandb_run_holds_the_same_keys(bert_run):
    out, _ = bert_run
    from kdmech.wandb_offline import offline_config

    runs = sorted((out / "wandb").glob("offline-run-*"))
    kinds = sorted(offline_config(r)["kdmech"]["command"] for r in runs)
    assert kinds == ["distill", "report", "train-teacher"]  # teacher, student, the capacity report
    data = b"".join(next(r.glob("run-*.wandb")).read_bytes() for r in runs)
    for key in (b"teacher/top1_held_out", b"analysis/A", b"analysis/ld_student", b"analysis/worst_drop_student",
                b"train/kl", b"train/ce", b"train/cos", b"analysis/nodes", b"circuit/student_nodes",
                b"final/A", b"final/parameter_ratio", b"capacity"):
        assert key in data, key


def test_a_teacher_of_the_other_family_is_not_reused(bert_run):
    out, _ = bert_run
    with pytest.raises(KdmechError, match="holds a bert teacher, not gpt2"):
        quickstart(out, family="gpt2", depths=[0.5], wandb="disabled", progress=False)


@pytest.mark.slow  # 40 s; the script's path is the GPT-2 test's in test_analyze.py, the BERT pair analysis is tested above
def test_paper_replication_script_takes_the_bert_pair(bert_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out, _ = bert_run
    script = Path(__file__).parents[1] / "analyze" / "replicate_paper.py"
    proc = subprocess.run([sys.executable, script, "--family", "bert", "--teacher", str(out / "teacher"),
                           "--student", str(out / "students" / NAME), "--out", str(tmp_path / "rep"),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "paper: 0.821 (numerals)" in proc.stdout and "edges not pruned" in proc.stdout
    assert json.loads((tmp_path / "rep" / "analysis.json").read_text())["task"] == "numerals-cloze"
