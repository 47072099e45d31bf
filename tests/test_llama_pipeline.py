"""The Llama family end to end: `kdmech quickstart --family llama` writes the GPT-2 quickstart's
output contract (JSON, PNG, W&B, report, timeline) with circuits that have edges, and its
logged numbers recompute from prompts.json with a plain Hugging Face forward; each Llama-layout
model type runs train-teacher + distill + analyze (slow); the paper-replication script takes
the Llama pair and prints the authors' Llama scores beside kdmech's drop-one numbers (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from kdmech.cli import main
from kdmech.commands.distill import AnalysisSchedule, DistillTraining
from kdmech.commands.quickstart import quickstart
from kdmech.models import CapacitySpec, build_llama_student, load_causal_lm
from kdmech.run_layout import unlisted
from kdmech.tasks import PromptSet

NAME = "d0.5-w1-h1"


@pytest.fixture(scope="module")
def llama_run(trained_llama_teacher, tmp_path_factory):
    """The quickstart over the session's tiny Llama teacher (trained by the same recipe)."""
    out = tmp_path_factory.mktemp("llama") / "run"
    summary = quickstart(out, family="llama", teacher=str(trained_llama_teacher), depths=[0.5],
                         student_training=DistillTraining(steps=40),
                         analysis=AnalysisSchedule(every_n_steps=20, circuit_every_n_steps=40, per_type=32,
                                                   min_prompts=32),
                         wandb="offline", progress=False)
    return out, summary


def test_llama_quickstart_writes_the_output_contract(llama_run, trained_llama_teacher):
    out, summary = llama_run
    teacher_eval = json.loads((Path(trained_llama_teacher) / "eval.json").read_text())
    assert teacher_eval["family"] == "llama" and teacher_eval["top1"] >= 0.99
    for folder in (f"students/{NAME}", f"analysis/{NAME}", f"pair-analysis/{NAME}", f"timeline/{NAME}",
                   "report", "wandb"):
        assert (out / folder).is_dir(), folder
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert unlisted(out) == []  # every file is one RunLayout (and the README's Output block) names
    assert list((out / "analysis" / NAME).glob("influence_step_*.png"))
    assert list((out / "timeline" / NAME).glob("*.png"))
    student = json.loads((out / "students" / NAME / "config.json").read_text())
    assert student["model_type"] == "llama" and student["num_hidden_layers"] == 2
    assert student["num_key_value_heads"] == 2 and student["tie_word_embeddings"] is False
    (result,) = summary["students"]
    assert result["steps"] == [0, 20, 40] and 0 < result["A"] <= 1 and result["worst_node"]
    circuit = json.loads((out / "analysis" / NAME / "circuit_step_40.json").read_text())
    for who in ("teacher", "student"):
        c = circuit[who]
        assert c["nodes"] and c["edges_pruned"] is True and c["edges"], who  # non-empty, with edges
        assert not circuit["probes"][who]["successor"].get("error")
    pair = json.loads((out / "pair-analysis" / NAME / "analysis.json").read_text())
    assert {"sensitivity", "noise", "shift", "alignment", "worst_drop"} <= set(pair)
    # the probes run with the circuits at checkpoints (the pair analysis does not repeat them)
    assert abs(sum(circuit["probes"]["teacher"]["logit_attribution"]["per_node"].values())) > 0


def test_llama_logged_numbers_recompute_from_prompts_json(llama_run, trained_llama_teacher):
    out, _ = llama_run
    prompts = PromptSet.load(out / "analysis" / NAME / "prompts.json")
    final = json.loads((out / "analysis" / NAME / "step_40.json").read_text())
    for who, path in (("teacher", trained_llama_teacher), ("student", out / "students" / NAME)):
        model = AutoModelForCausalLM.from_pretrained(path).eval()  # plain HF, not kdmech's loader
        with torch.no_grad():
            at = model(input_ids=prompts.clean).logits[torch.arange(len(prompts)), prompts.positions]
        rows = torch.arange(len(prompts))
        ld = (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()
        assert final["logit_diff"][who] == pytest.approx(ld, rel=1e-4), who


def test_llama_wandb_runs_hold_the_same_keys(llama_run):
    out, _ = llama_run
    runs = sorted((out / "wandb").glob("offline-run-*"))
    data = b"".join(next(r.glob("run-*.wandb")).read_bytes() for r in runs)
    for key in (b"analysis/A", b"analysis/ld_student", b"train/kl", b"train/cos", b"analysis/nodes",
                b"circuit/student_nodes", b"final/A", b"final/parameter_ratio", b"capacity"):
        assert key in data, key


@pytest.mark.slow  # about a minute each on two idle cores
@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "mistral"])
def test_each_model_type_trains_distils_and_is_analysed(model_type, tmp_path):
    teacher = tmp_path / "teacher"
    assert main(["train-teacher", "--family", "llama", "--tiny.model_type", model_type, "--out", str(teacher),
                 "--wandb", "disabled", "--progress", "false"]) in (0, None)
    config = json.loads((teacher / "config.json").read_text())
    assert config["model_type"] == model_type and json.loads((teacher / "eval.json").read_text())["top1"] >= 0.99
    assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "run"), "--capacity.depth", "0.5",
                 "--training.steps", "20", "--analysis.every_n_steps", "20", "--analysis.per_type", "32",
                 "--analysis.min_prompts", "32", "--wandb", "disabled", "--progress", "false"]) in (0, None)
    student = tmp_path / "run" / "students" / NAME
    assert json.loads((student / "config.json").read_text())["model_type"] == model_type
    assert main(["analyze", "--teacher", str(teacher), "--student", str(student), "--out", str(tmp_path / "an"),
                 "--analyses", "[circuit, probes]", "--analysis.per_type", "32", "--analysis.min_prompts", "32",
                 "--analysis.thresholds", "[0.2]", "--wandb", "disabled", "--progress", "false"]) in (0, None)
    r = json.loads((tmp_path / "an" / "analysis.json").read_text())
    (c,) = r["circuit"]["teacher"]["circuits"]
    assert c["nodes"] and c["edges"]


@pytest.mark.slow  # a few minutes: both presets' analyses with circuits
def test_paper_replication_script_takes_the_llama_pair(trained_llama_teacher, tmp_path):
    teacher, tok = load_causal_lm(trained_llama_teacher)
    student, _ = build_llama_student(teacher, CapacitySpec(depth=0.5))
    student.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    script = Path(__file__).parents[1] / "analyze" / "replicate_paper.py"
    proc = subprocess.run([sys.executable, str(script), "--family", "llama", "--teacher", str(trained_llama_teacher),
                           "--student", str(tmp_path / "student"), "--out", str(tmp_path / "rep"), "--preset", "kdmech",
                           "--no-progress"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    assert r["options"]["dtype"] == "bfloat16"
    # the authors' scores as printed: 82.08 and 25.65 (a float just below 25.65) at one decimal
    assert "authors L22.H15 82.1%" in proc.stdout and "authors L15.H22 25.6%" in proc.stdout
    worst = max(r["influence"]["teacher"], key=r["influence"]["teacher"].get)
    assert f"{worst} {r['influence']['retained']['teacher'][worst]:.1f}%" in proc.stdout
