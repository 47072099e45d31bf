"""End to end on the real tiny teacher: training quality, the output contract, W&B offline
contents, resuming, and DDP on two CPU processes."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
from kdmech.models import CapacitySpec, load_causal_lm
from kdmech.tasks import NumeralTask, PromptSet, tokenize_prompts
from kdmech.tasks.filtering import model_logits

SMALL = AnalysisSchedule(every_n_steps=20, per_type=16, min_prompts=16)


def test_teacher_reaches_99_percent_on_held_out_prompts(trained_teacher):
    path, scores = trained_teacher
    assert {"model.safetensors", "config.json", "tokenizer.json", "eval.json"} <= {p.name for p in path.iterdir()}
    model, tok = load_causal_lm(path)
    held_out = tokenize_prompts(NumeralTask(seed=98765).prompts(), tok)
    logits = model_logits(model, held_out)
    top1 = (logits.argmax(-1) == held_out.answers).float().mean().item()
    assert top1 >= 0.99 and scores["top1"] >= 0.99


@pytest.fixture(scope="module")
def distilled(trained_teacher, tmp_path_factory):
    teacher, _ = trained_teacher
    out = tmp_path_factory.mktemp("distil")
    result = distill(str(teacher), out, CapacitySpec(depth=0.5), training=DistillTraining(steps=40),
                     analysis=SMALL, wandb="offline", progress=False)
    return teacher, out, result


def test_output_contract(distilled):
    teacher, out, result = distilled
    name = "d0.5-w1-h1"
    assert result.name == name and result.steps == [0, 20, 40]
    student_dir = out / "students" / name
    assert {"model.safetensors", "config.json", "provenance.json", "tokenizer.json"} <= {p.name for p in student_dir.iterdir()}
    prov = json.loads((student_dir / "provenance.json").read_text())
    assert prov["layer_map"] == {"0": 0, "1": 3}
    circuit = json.loads((out / "analysis" / name / "circuit_step_40.json").read_text())
    assert circuit["step"] == 40 and "error" not in circuit
    assert circuit["student"]["completeness"] >= 80 and circuit["teacher"]["threshold"] == 0.2
    assert not (out / "analysis" / name / "circuit_step_20.json").exists()  # only at the end
    for step in (0, 20, 40):
        d = json.loads((out / "analysis" / name / f"step_{step}.json").read_text())
        assert {"step", "task", "ablation", "logit_diff", "influence", "matching", "alignment"} <= set(d)
        assert d["step"] == step and d["ablation"] == "mean" and d["task"] == "numerals"
        assert set(d["influence"]["teacher"]) == {f"L{l}.H{h}" for l in range(4) for h in range(4)} | {f"L{l}.MLP" for l in range(4)}
        assert len(d["matching"]) == 2 * 5 and 0 < d["alignment"]["A"] <= 1


def test_logged_numbers_recompute_from_prompts_json(distilled):
    """LD in the final step JSON equals an independent HF forward on prompts.json's ids."""
    teacher, out, _ = distilled
    name = "d0.5-w1-h1"
    prompts = PromptSet.load(out / "analysis" / name / "prompts.json")
    final = json.loads((out / "analysis" / name / "step_40.json").read_text())
    for who, path in (("teacher", teacher), ("student", out / "students" / name)):
        model, _ = load_causal_lm(path)
        with torch.no_grad():
            logits = model(input_ids=prompts.clean).logits
        rows = torch.arange(len(prompts))
        at = logits[rows, prompts.positions]
        ld = (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()
        assert final["logit_diff"][who] == pytest.approx(ld, rel=1e-4), who


def test_teacher_weights_did_not_move(distilled):
    teacher, out, _ = distilled
    before, _ = load_causal_lm(teacher)
    ckpt = torch.load(out / "checkpoints" / "d0.5-w1-h1" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert ckpt["global_step"] == 40
    # the teacher on disk is what the analysis saw at every step
    steps = [json.loads((out / "analysis" / "d0.5-w1-h1" / f"step_{s}.json").read_text()) for s in (0, 40)]
    assert steps[0]["influence"]["teacher"] == steps[1]["influence"]["teacher"]


def test_wandb_offline_run_holds_the_logged_keys(distilled):
    _, out, _ = distilled
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"analysis/A", b"analysis/ld_teacher", b"analysis/ld_student", b"analysis/worst_drop_student",
                b"train/kl", b"train/ce", b"train/cos", b"analysis/nodes", b"analysis/influence"):
        assert key in data, key
    tables = list((runs[0] / "files" / "media" / "table" / "analysis").glob("nodes_*.table.json"))
    assert len(tables) == 3  # one incremental increment per checkpoint
    parts = [json.loads(t.read_text()) for t in tables]
    assert all(p["columns"] == ["step", "student_node", "influence_student", "in_circuit", "matched_teacher_node",
                                "influence_teacher", "similarity"] for p in parts)
    assert sorted({row[0] for p in parts for row in p["data"]}) == [0, 20, 40]
    assert len(list((runs[0] / "files" / "media" / "images" / "analysis").glob("influence_*.png"))) == 3
    assert b"circuit/student_nodes" in data and b"circuit-d0.5-w1-h1" in data  # the artifact
    timeline = runs[0] / "files" / "media" / "images" / "timeline"
    # the restructuring views are drawn once, at the end of training (not at every checkpoint)
    assert {p.name.split("_")[0] for p in timeline.glob("*.png")} >= {"influence", "matching", "alignment", "events"}
    assert len(list(timeline.glob("matching_flow_*.png"))) == 1


def test_resume_continues_from_the_last_checkpoint(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    kw = dict(capacity=CapacitySpec(depth=0.25), analysis=SMALL, wandb="disabled", progress=False)
    first = distill(str(teacher), tmp_path, training=DistillTraining(steps=20), **kw)
    assert first.steps == [0, 20]
    second = distill(str(teacher), tmp_path, training=DistillTraining(steps=40), resume=True, **kw)
    assert second.steps == [20, 40]  # started at step 20, not from scratch
    ckpt = torch.load(tmp_path / "checkpoints" / "d0.25-w1-h1" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 40


def test_ddp_on_two_cpu_processes(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    cmd = [sys.executable, "-m", "kdmech", "distill", "--teacher", str(teacher), "--out", str(tmp_path),
           "--strategy", "ddp", "--devices", "2", "--training.steps", "10", "--training.batch_size", "16",
           "--analysis.every_n_steps", "0", "--analysis.per_type", "8", "--analysis.min_prompts", "8", "--wandb", "disabled",
           "--progress", "false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 processes, strategy ddp" in proc.stdout
    analysis = tmp_path / "analysis" / "d0.5-w1-h1"
    assert sorted(p.name for p in analysis.glob("step_*.json")) == ["step_0.json", "step_10.json"]
    assert (tmp_path / "students" / "d0.5-w1-h1" / "model.safetensors").exists()


def test_distill_shared_writes_the_contract_for_every_student(trained_teacher, tmp_path):
    from kdmech.commands.distill_shared import distill_shared

    teacher, _ = trained_teacher
    results = distill_shared(str(teacher), tmp_path, [CapacitySpec(depth=0.25), CapacitySpec(depth=0.5)],
                             training=DistillTraining(steps=20),
                             analysis=AnalysisSchedule(every_n_steps=10, per_type=8, min_prompts=8, circuits=False),
                             wandb="disabled", progress=False)
    assert [r.name for r in results] == ["d0.25-w1-h1", "d0.5-w1-h1"]
    for r in results:
        assert r.steps == [0, 10, 20]
        assert (tmp_path / "students" / r.name / "provenance.json").exists()
        assert (tmp_path / "analysis" / r.name / "step_20.json").exists()
    ckpt = torch.load(tmp_path / "checkpoints" / "shared" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])


def test_distill_shared_with_one_capacity_is_distill(trained_teacher, tmp_path):
    """One core: distill-shared with one capacity trains bit-identical weights to distill (same
    seed and steps), keeps its checkpoint under checkpoints/shared and resumes from it, W&B run
    included."""
    from kdmech.commands.distill_shared import distill_shared

    teacher, _ = trained_teacher
    off = AnalysisSchedule(enabled=False, filter_prompts=False, every_n_steps=4)  # checkpoints every 4
    capacity = CapacitySpec(depth=0.5, width=0.5, heads=0.5)  # a projection is trained too
    training = DistillTraining(steps=12, batch_size=8, n_train=128, warmup_steps=4, seed=3)
    alone = distill(str(teacher), tmp_path / "alone", capacity, training=training, analysis=off,
                    wandb="disabled", progress=False)
    kw = dict(analysis=off, wandb="offline", progress=False)
    (shared,) = distill_shared(str(teacher), tmp_path / "shared", [capacity], training=training, **kw)
    assert alone.name == shared.name == capacity.name

    def weights(run):
        return load_causal_lm(tmp_path / run / "students" / capacity.name)[0].state_dict()

    sa, sb = weights("alone"), weights("shared")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ca = torch.load(tmp_path / "alone" / "checkpoints" / capacity.name / "last.ckpt", weights_only=False)
    cb = torch.load(tmp_path / "shared" / "checkpoints" / "shared" / "last.ckpt", weights_only=False)
    assert ca["global_step"] == cb["global_step"] == 12
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in ca["state_dict"])
    # Resumed at its last step with another seed: the run is finished, so it says so and does
    # nothing — the weights are the checkpoint's and no second W&B run is written.
    distill_shared(str(teacher), tmp_path / "shared", [capacity], resume=True,
                   training=replace(training, seed=4), **kw)
    sc = weights("shared")
    assert all(torch.equal(sb[k], sc[k]) for k in sb)
    run_id = (tmp_path / "shared" / "checkpoints" / "shared" / "wandb_run_id").read_text().strip()
    runs = sorted((tmp_path / "shared" / "wandb").glob("offline-run-*"))
    superseded = sorted((tmp_path / "shared" / "wandb" / "superseded").glob("offline-run-*"))
    assert len(runs) == 1 and superseded == []
    assert all(list(r.glob(f"run-{run_id}.wandb")) for r in runs + superseded)
