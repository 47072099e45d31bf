"""`kdmech analyze` end to end on the trained tiny teacher and a student built from it, plus the
probes and the noise curve against independent expectations."""

import json

import pytest
import torch

from kdmech.analysis import boot, corrupted_activations, profile
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.analyze_result import AnalyzeResult
from kdmech.analysis.noise import add_weight_noise, summarise
from kdmech.analysis.probes import logit_attribution, similar_member_scores
from kdmech.cli import main
from kdmech.commands.analyze import AnalyzeOptions, analyze
from kdmech.models import CapacitySpec, build_gpt2_student, load_causal_lm

QUICK = AnalyzeOptions(per_type=16, min_prompts=16, thresholds=(0.2, 0.3), noise_sigmas=(0.0, 0.1, 1.0),
                       noise_seeds=2, n_boot=100)


@pytest.fixture(scope="module")
def pair(trained_teacher, tmp_path_factory):
    teacher, _ = trained_teacher
    model, tok = load_causal_lm(teacher)
    student, _ = build_gpt2_student(model, CapacitySpec(depth=0.75))
    folder = tmp_path_factory.mktemp("student")
    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    return teacher, folder


@pytest.fixture(scope="module")
def analysed(pair, tmp_path_factory):
    teacher, student = pair
    out = tmp_path_factory.mktemp("analysis") / "out"
    analyze(str(teacher), str(student), out, analysis=QUICK, progress=False)
    return out


def test_analysis_json_has_every_section_with_its_options(analysed):
    r = json.loads((analysed / "analysis.json").read_text())
    for key in ("logit_diff", "influence", "sensitivity", "circuit", "matching", "alignment",
                "noise", "shift", "probes"):
        assert key in r, key
    assert r["influence"]["ablation"] == "mean"
    assert r["alignment"]["normalization"] == "sum"
    assert r["matching"]["options"]["matching_direction"] == "student_to_teacher"
    lo, hi = r["alignment"]["ci95"]["A"]
    assert lo <= r["alignment"]["A"] <= hi
    assert {c["threshold"] for c in r["circuit"]["teacher"]["circuits"]} == {0.2, 0.3}
    assert r["sensitivity"]["compression"] == pytest.approx(1 - 3 / 4, abs=0.1)
    assert {row["shift"] for row in r["shift"]} >= {"in-distribution", "longer-6", "range-20-40", "words"}
    assert {p.name for p in analysed.iterdir()} >= {"analysis.json", "prompts.json", "influence.png",
                                                     "circuits.png", "sensitivity.png", "noise.png", "shift.png"}


def test_analysis_json_reads_back_as_the_typed_result_unchanged(analysed):
    raw = json.loads((analysed / "analysis.json").read_text())
    r = AnalyzeResult.load(analysed / "analysis.json")
    assert json.loads(json.dumps(r.to_json())) == raw  # every key, in the file's order too
    assert list(r.to_json()) == list(raw)
    assert r.A == raw["alignment"]["A"] and list(r.A_ci95) == raw["alignment"]["ci95"]["A"]
    assert r.severity("teacher", "mlps") == raw["sensitivity"]["teacher"]["mlps"]["severity"]
    assert r.worst_drop.student.node == raw["worst_drop"]["student"]["node"]
    ref = [c for c in raw["circuit"]["student"]["circuits"] if c["threshold"] == 0.2]
    assert r.reference_circuit("student") == ref[0]
    # an older or newer file: unknown keys are kept, absent sections are None
    partial = {k: v for k, v in raw.items() if k not in ("noise", "shift", "probes")} | {"later": 1}
    back = AnalyzeResult.from_json(partial)
    assert back.noise is None and back.severity() is not None and back.to_json()["later"] == 1


def test_alignment_falls_as_noise_grows(analysed):
    noise = json.loads((analysed / "analysis.json").read_text())["noise"]
    means = noise["A_mean"]
    assert means[-1] < means[0]
    assert noise["spearman_rho"] < 0


def test_noise_summary_on_a_known_curve():
    sig = [0.0, 0.01, 0.1, 1.0]
    A = [[0.9, 0.9], [0.8, 0.8], [0.6, 0.6], [0.4, 0.4]]  # 0.4 − (0.2/ln10)·ln σ on σ > 0
    s = summarise(sig, [0, 1], A)
    assert s.fit_b == pytest.approx(0.2 / 2.302585, rel=1e-4) and s.fit_r2 == pytest.approx(1.0)
    assert s.spearman_rho == pytest.approx(-1.0) and s.plateau == pytest.approx(0.5)


def test_weight_noise_scales_with_each_matrix_std(tiny_gpt2):
    noisy = add_weight_noise(tiny_gpt2, 0.5, seed=0)
    w, n = tiny_gpt2.transformer.h[0].mlp.c_fc.weight, noisy.transformer.h[0].mlp.c_fc.weight
    assert ((n - w).std() / w.std()).item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(noisy.transformer.h[0].ln_1.weight, tiny_gpt2.transformer.h[0].ln_1.weight)


def test_logit_attribution_adds_up_to_the_logit_difference(tiny_gpt2, tokenizer, prompts):
    bridged = boot(tiny_gpt2, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    dla = logit_attribution(engine)
    total = sum(dla.per_node.values()) + dla.embeddings + dla.biases
    assert total == pytest.approx(engine.full_metric, rel=1e-4, abs=1e-4)
    assert set(dla.mlp_write_norm) == {"L0.MLP", "L1.MLP"}


def test_similar_member_scores_read_the_mean_pattern(tiny_gpt2, tokenizer, prompts):
    p = profile(tiny_gpt2, tokenizer, prompts)
    scores = similar_member_scores(p)
    members = (prompts.clean != prompts.corrupted).any(0).nonzero().flatten()
    # the members are exactly the four numeral positions
    assert [tokenizer.decode([int(prompts.clean[0, i])]).isdigit() for i in members] == [True] * 4
    last = prompts.positions[0]
    expected = p.patterns[1, 2, last, members].sum().item()
    assert scores["L1.H2"] == pytest.approx(expected)
    from kdmech.analysis.probes import similar_member_from_items

    items = similar_member_from_items(p)
    m = members.tolist()
    by_hand = sum(p.patterns[0, 3, m[i], m[:i]].sum().item() for i in range(1, 4)) / 3
    assert items["L0.H3"] == pytest.approx(by_hand, rel=1e-5)


def test_cli_refuses_an_unknown_analysis(pair, tmp_path, capsys):
    teacher, student = pair
    code = main(["analyze", "--teacher", str(teacher), "--student", str(student), "--out",
                 str(tmp_path / "o"), "--analyses", "[circuit, vibes]"])
    assert code == 2 and "analysis 'vibes' is unknown" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_paper_replication_runs_on_local_models_of_the_same_kind(pair, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    teacher, student = pair
    script = Path(__file__).parents[1] / "analyze" / "replicate_paper.py"
    proc = subprocess.run([sys.executable, str(script), "--teacher", str(teacher), "--student", str(student),
                           "--out", str(tmp_path / "rep"), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher circuit (T=0.20)" in proc.stdout and "(paper)" in proc.stdout
    assert "alignment A =" in proc.stdout and (tmp_path / "rep" / "analysis.json").exists()
    # Both presets side by side; the authors run beside the kdmech one (tests/test_presets.py).
    assert "the two presets" in proc.stdout and "influence feeding A" in proc.stdout
    authors = json.loads((tmp_path / "rep" / "authors" / "analysis.json").read_text())
    # numerals: their numeral notebook's ablation (mean; their IOI/QA notebooks zero)
    assert authors["options"]["preset"] == "authors" and authors["alignment"]["ablation"] == "mean"
    assert authors["alignment"]["inputs"]["conventions"]["source"] == "seq_alignment_metric.ipynb"


def test_paper_replication_without_hub_weights_fails_cleanly(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "analyze" / "replicate_paper.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "rep")],
                          capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "replicate_paper: error: model 'gpt2'" in proc.stderr
    assert not (tmp_path / "rep").exists()


def test_analyze_logs_an_offline_wandb_run_of_its_own(analysed):
    """`kdmech analyze` writes its own W&B run (offline by default here): the full options and
    provenance in its config, the headline numbers of analysis.json in its summary, the
    matching as a table and every PNG."""
    from kdmech.wandb_offline import offline_config, offline_history, offline_summary

    r = json.loads((analysed / "analysis.json").read_text())
    (folder,) = (analysed / "wandb").glob("offline-run-*")
    config = offline_config(folder)
    assert config["kdmech"]["command"] == "analyze" and config["analysis"]["n_boot"] == QUICK.n_boot
    assert config["student"] == r["student"] and config["task"] == "numerals"
    summary = offline_summary(folder)
    assert summary["A"] == pytest.approx(r["alignment"]["A"])
    assert [summary["A_ci95_low"], summary["A_ci95_high"]] == pytest.approx(r["alignment"]["ci95"]["A"])
    assert summary["worst_drop_ratio"] == pytest.approx(r["worst_drop"]["ratio"])
    ref = next(c for c in r["circuit"]["student"]["circuits"] if abs(c["threshold"] - 0.2) < 1e-9)
    assert summary["circuit_nodes_student"] == len(ref["nodes"])
    logged = {k for row in offline_history(folder) for k in row}
    assert "matching" in logged
    assert {f"plots/{p.stem}" for p in analysed.glob("*.png")} <= logged and len(list(analysed.glob("*.png"))) >= 4


def test_noise_at_sigma_zero_is_the_pair_itself(analysed):
    """σ = 0 adds no noise: every seed's A there is the pair's own A (computed once per curve)."""
    r = json.loads((analysed / "analysis.json").read_text())
    assert r["noise"]["sigmas"][0] == 0.0
    assert r["noise"]["A"][0] == [r["alignment"]["A"]] * QUICK.noise_seeds
