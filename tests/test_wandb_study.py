"""A quickstart as W&B shows it, read back from its offline `.wandb` files (what `wandb sync`
uploads): one group for the whole study with job types teacher/student/report, the teacher →
student model artifacts, the restructuring as W&B data (per-node influence and circuit
membership scalars, the matching and events tables) checked against the run folder's own JSON
records, and a workspace whose every panel reads a key the runs logged."""

import json
from pathlib import Path

import pytest

from kdmech.wandb_offline import offline_history, offline_summary, wandb_records

STUDENT = "d0.5-w1-h1"
pytestmark = pytest.mark.slow  # a whole quickstart: about a minute and a half


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from kdmech.analysis.options import AnalysisSchedule
    from kdmech.commands.distill import DistillTraining
    from kdmech.commands.quickstart import quickstart

    out = tmp_path_factory.mktemp("w") / "study"
    quickstart(out, depths=[0.5], student_training=DistillTraining(steps=20, n_train=2000),
               analysis=AnalysisSchedule(every_n_steps=10, circuit_every_n_steps=20, per_type=16, min_prompts=16,
                                         attribution_scores=True),
               wandb="offline", progress=False)
    runs = {}
    for folder in sorted((out / "wandb").glob("offline-run-*")):
        records = list(wandb_records(next(folder.glob("run-*.wandb"))))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
        runs[run.job_type] = {"run": run, "folder": folder, "artifacts": artifacts}
    return out, runs


def _steps(out: Path) -> dict[int, dict]:
    folder = out / "analysis" / STUDENT
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in folder.glob("step_*.json")}


def _rows_at(history: list[dict], step: int) -> dict:
    merged = {}
    for row in history:
        if row.get("trainer/global_step") == step:
            merged |= row
    return merged


def test_one_group_with_a_job_type_per_role(study):
    out, runs = study
    assert sorted(runs) == ["report", "student", "teacher"]
    assert {r["run"].run_group for r in runs.values()} == {"study"}
    assert runs["student"]["run"].display_name == STUDENT and runs["teacher"]["run"].display_name == "teacher"
    assert {"capacity:d0.5-w1-h1", "init:every_k"} <= set(runs["student"]["run"].tags)


def test_teacher_and_student_are_model_artifacts_the_student_naming_its_teacher(study):
    out, runs = study
    (teacher,) = [a for a in runs["teacher"]["artifacts"] if a.type == "model"]
    assert teacher.name == "teacher-study"
    assert {e.path for e in teacher.manifest.contents} >= {"model.safetensors", "config.json", "eval.json"}
    (student,) = [a for a in runs["student"]["artifacts"] if a.type == "model"]
    assert student.name == f"student-study-{STUDENT}"
    assert {e.path for e in student.manifest.contents} >= {"model.safetensors", "provenance.json"}
    metadata = json.loads(student.metadata)
    assert metadata["teacher_artifact"] == "teacher-study:latest" and metadata["teacher"] == str(out / "teacher")


def test_per_node_influence_and_circuit_membership_are_scalars(study):
    out, runs = study
    history = offline_history(runs["student"]["folder"])
    steps = _steps(out)
    assert sorted(steps) == [0, 10, 20]
    for step, record in steps.items():
        row = _rows_at(history, step)
        for who in ("student", "teacher"):
            for node, value in record["influence"][who].items():
                assert row[f"influence/{who}/{node}"] == pytest.approx(value), (step, who, node)
        circuit = out / "analysis" / STUDENT / f"circuit_step_{step}.json"
        members = {k: v for k, v in row.items() if k.startswith("in_circuit/")}
        if not circuit.exists():  # step 10: no circuit computed, so no membership logged
            assert step == 10 and members == {}
            continue
        c = json.loads(circuit.read_text())
        for who in ("student", "teacher"):
            for node in record["influence"][who]:
                assert members[f"in_circuit/{who}/{node}"] == int(node in c[who]["nodes"]), (step, who, node)


def test_attribution_per_node_as_scalars_and_a_node_by_step_table(study):
    out, runs = study
    folder = runs["student"]["folder"]
    history = offline_history(folder)
    for step, record in _steps(out).items():
        a = record["attribution"]
        assert a["method"] == "eap-ig" and not a["error"]
        row = _rows_at(history, step)
        for node, score in a["scores"].items():
            assert row[f"attribution/student/{node}"] == pytest.approx(-100 * score / a["metric"]), (step, node)
        table = _table(folder, row["analysis/attribution"])
        assert table["columns"] == ["step", "student_node", "method", "score", "estimated_drop", "influence_student"]
        assert [(r[0], r[1], r[3]) for r in table["data"]] == [
            (step, node, pytest.approx(score)) for node, score in a["scores"].items()]
    assert (out / "timeline" / STUDENT / "attribution_over_steps.png").exists()


def _table(run_folder: Path, value: dict) -> dict:
    return json.loads((run_folder / "files" / value["path"]).read_text())


def test_matching_per_step_and_the_nodes_table_with_circuit_membership(study):
    out, runs = study
    folder = runs["student"]["folder"]
    history = offline_history(folder)
    for step, record in _steps(out).items():
        table = _table(folder, _rows_at(history, step)["analysis/matching"])
        assert table["columns"] == ["step", "student_node", "matched_teacher_node", "similarity"]
        assert [r[1:] for r in table["data"]] == [[m["student"], m["teacher"], pytest.approx(m["similarity"])]
                                                  for m in record["matching"]]
        nodes = _table(folder, _rows_at(history, step)["analysis/nodes"])
        column = nodes["columns"].index("in_circuit")
        circuit = out / "analysis" / STUDENT / f"circuit_step_{step}.json"
        expected = (["not computed"] * len(record["matching"]) if not circuit.exists() else
                    ["yes" if m["student"] in json.loads(circuit.read_text())["student"]["nodes"] else "no"
                     for m in record["matching"]])
        assert [r[column] for r in nodes["data"]] == expected, step


def test_events_table_in_the_student_run_and_the_report_run(study):
    out, runs = study
    events = json.loads((out / "timeline" / STUDENT / "events.json").read_text())["events"]
    assert events  # the tiny pair always shows some (discards at least)
    # an emergence already there at step 0 came with the copied teacher layers: shown as inherited
    kind = lambda e: "inherited" if (e["kind"], e["first_step"]) == ("emergence", 0) else e["kind"]  # noqa: E731
    expected = [[kind(e), ", ".join(e["nodes"]), e["first_step"], e["persists"], e["detail"]] for e in events]
    folder = runs["student"]["folder"]
    (value,) = [row["timeline/event_table"] for row in offline_history(folder) if "timeline/event_table" in row]
    table = _table(folder, value)
    assert table["columns"] == ["kind", "nodes", "first_step", "persists", "detail"] and table["data"] == expected
    report = runs["report"]["folder"]
    (row,) = offline_history(report)
    table = _table(report, row["timeline/event_table"])
    assert table["columns"][0] == "student" and table["data"] == [[STUDENT, *e] for e in expected]


def test_report_run_holds_a_against_the_ratio_as_plain_data(study):
    out, runs = study
    summary = json.loads((out / "summary.json").read_text())["students"][0]
    ratio = summary["parameters"] / summary["teacher_parameters"]
    logged = offline_summary(runs["report"]["folder"])
    assert logged[f"{STUDENT}/A"] == pytest.approx(summary["A"])
    assert logged[f"{STUDENT}/parameter_ratio"] == pytest.approx(ratio)
    (row,) = offline_history(runs["report"]["folder"])
    table = _table(runs["report"]["folder"], row["capacity/A_and_parameter_ratio"])
    assert table["data"] == [[STUDENT, pytest.approx(ratio), pytest.approx(summary["A"])]]


def _logged_keys(folders) -> set[str]:
    keys = set()
    for folder in folders:
        for row in offline_history(folder):
            keys |= set(row)
        keys |= set(offline_summary(folder))
    return keys


def test_every_workspace_panel_reads_a_key_the_runs_logged(study, capsys):
    import re

    from kdmech.cli import main
    from kdmech.report.workspace import build_workspace, panel_keys

    out, runs = study
    logged = _logged_keys(r["folder"] for r in runs.values())
    workspace = build_workspace("someone", "kdmech", group="study")
    keys, regexes = panel_keys(workspace)
    assert keys and keys <= logged, sorted(keys - logged)
    for regex in regexes:
        assert any(re.match(regex, k) for k in logged), regex
    assert {"analysis/A", "timeline/influence_over_steps", "final/A", "final/parameter_ratio"} <= keys
    view = workspace._to_model()  # what save() uploads: it serialises without a network
    assert view.spec.section.panel_bank_config.sections[0].name == "Alignment over training"
    assert main(["workspace", "someone/kdmech", "--wandb", "offline"]) == 0
    assert "built but not saved" in capsys.readouterr().out
