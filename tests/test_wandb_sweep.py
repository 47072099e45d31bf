"""Sweeps as W&B users run them: W&B's own agent code builds and starts the `kdmech distill`
command of each point from the sweep's `command:`; each point lands in a folder of its own
with its full config in the run folder and in the offline W&B run, and its final numbers in
run.summary; the capacity report is rebuilt from the runs' analysis artifacts (as `kdmech
report --sweep` reads them through W&B's public API) and logged as a W&B table."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from kdmech.cli import main
from kdmech.run_layout import RunLayout
from kdmech.sweep import point_name
from kdmech.tracking import read_journal
from kdmech.wandb_offline import offline_config, offline_folders, offline_history, offline_summary

COMMAND = ["${env}", "kdmech", "distill", "${args}"]


@pytest.fixture(scope="module")
def agent_runs(trained_teacher, tmp_path_factory):
    """Two points that differ only in seed, started by wandb.wandb_agent.Agent._command_run
    (what `wandb agent` does with each run the server hands it), side by side."""
    from wandb.wandb_agent import Agent

    teacher, _ = trained_teacher
    root = tmp_path_factory.mktemp("agent")
    out = root / "sweep"
    params = {"teacher": str(teacher), "out": str(out), "capacity.depth": 0.5, "training.steps": 8,
              "training.n_train": 128, "training.batch_size": 8, "analysis.every_n_steps": 8,
              "analysis.per_type": 32, "analysis.min_prompts": 8, "analysis.circuit_every_n_steps": 0,
              "progress": False}
    points = [params | {"training.seed": s} for s in (0, 1)]
    bin_dir = str(Path(sys.executable).parent)
    with pytest.MonkeyPatch.context() as mp:  # the agent writes these into os.environ
        for key in ("WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):
            mp.setenv(key, "unset")
        mp.setenv("WANDB_SWEEP_ID", "testsweep")
        mp.setenv("WANDB_DIR", str(root))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("PATH", bin_dir + ":" + __import__("os").environ["PATH"])
        agent = Agent(api=None, queue=None, sweep_id="testsweep")
        agent._sweep_command = list(COMMAND)  # what Agent.run reads from the sweep's config
        for i, point in enumerate(points):
            agent._command_run({"run_id": f"kdmrun{i}", "program": None,
                                "args": {k: {"value": v} for k, v in point.items()}})
        procs = [agent._run_processes[f"kdmrun{i}"] for i in range(2)]
        codes = [p.wait(timeout=400) for p in procs]
    return out, points, procs, codes


def test_wandb_agent_runs_kdmech_distill_per_point(agent_runs):
    out, points, procs, codes = agent_runs
    assert codes == [0, 0]
    args = procs[0]._popen.args
    assert args[:3] == ["/usr/bin/env", "kdmech", "distill"]
    assert f"--teacher={points[0]['teacher']}" in args and "--capacity.depth=0.5" in args
    assert "--training.seed=0" in args and "--progress=False" in args


def test_points_differing_only_in_seed_land_in_two_folders(agent_runs):
    out, points, _, _ = agent_runs
    names = [point_name(p) for p in points]
    assert names[0] != names[1] and names[1] == names[0].replace("-s0-", "-s1-")
    layout = RunLayout(out)
    for name, seed in zip(names, (0, 1)):
        assert (layout.student(name) / "model.safetensors").exists()
        assert json.loads((layout.student(name) / "provenance.json").read_text())["seed"] == seed
        assert layout.steps(name) == [0, 8]


def test_run_folder_and_offline_run_hold_the_full_config_and_final_summary(agent_runs, capsys):
    out, points, _, _ = agent_runs
    layout = RunLayout(out)
    name = point_name(points[1])
    text = layout.run_config(name).read_text()
    assert text.startswith("# kdmech distill --config config.yaml") and "git commit" in text
    assert (layout.student(name) / "config.yaml").read_text() == text
    cfg = yaml.safe_load(text)
    assert cfg["teacher"] == points[1]["teacher"] and cfg["name"] == name
    assert cfg["training"]["seed"] == 1 and cfg["training"]["steps"] == 8
    assert cfg["capacity"] == {"depth": 0.5, "width": 1.0, "heads": 1.0, "params": None, "rounds": 1}
    assert {"loss", "analysis", "data", "trainer", "strategy", "devices", "init", "project"} <= set(cfg)
    # the file is a config `kdmech distill` reads back as it is
    with pytest.raises(SystemExit):
        main(["distill", "--config", str(layout.run_config(name)), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["training"] == cfg["training"]

    (folder,) = offline_folders(layout.wandb, "kdmrun1")
    wcfg = offline_config(folder)
    assert wcfg["training"] == cfg["training"] and wcfg["analysis"] == cfg["analysis"]
    assert wcfg["kdmech"]["command"] == "distill" and wcfg["kdmech"]["version"]
    summary = offline_summary(folder)
    for key in ("A", "A_heads", "A_mlp", "worst_drop", "worst_drop_ratio", "logit_diff", "top1",
                "parameter_ratio", "circuit_nodes"):
        assert f"final/{key}" in summary, key
    last = json.loads(layout.step_json(name, 8).read_text())
    assert summary["final/A"] == pytest.approx(last["alignment"]["A"])
    assert summary["final/worst_drop_ratio"] == pytest.approx(last["worst_drop"]["ratio"])
    circuit = json.loads(layout.circuit_json(name, 8).read_text())
    if "student" in circuit:
        assert summary["final/circuit_nodes"] == len(circuit["student"]["nodes"])
    params = json.loads((layout.student(name) / "model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (layout.student(name) / "model.safetensors").read_bytes()[:8], "little")])
    assert summary["final/parameters"] > 0 and 0 < summary["final/parameter_ratio"] < 1 and params


class _Artifact:
    """A logged artifact as W&B's public API returns it, from what the run journaled."""

    def __init__(self, entry):
        self.type, self.metadata, self._files = entry["type"], entry["metadata"], entry["files"]

    def download(self, root):
        for f in self._files:
            shutil.copyfile(f, Path(root) / Path(f).name)


class _Run:
    def __init__(self, journal, path):
        self.state, self.path = "finished", path
        self._artifacts = [_Artifact(v) for _, row in read_journal(journal) for v in row.values()
                           if isinstance(v, dict) and v.get("_kdmech") == "artifact"]

    def logged_artifacts(self):
        return self._artifacts


class _Api:
    def __init__(self, runs):
        self._runs = runs

    def sweep(self, ref):
        assert ref == "me/kdmech/abc123"
        return type("Sweep", (), {"runs": self._runs})()


def test_report_from_the_sweeps_wandb_runs_equals_the_local_one(agent_runs, tmp_path):
    from kdmech.report.collect import collect
    from kdmech.report.from_wandb import fetch_sweep

    out, points, _, _ = agent_runs
    layout = RunLayout(out)
    api = _Api([_Run(layout.wandb_journal(point_name(p)), ["me", "kdmech", f"r{i}"]) for i, p in enumerate(points)])
    names = fetch_sweep("me/kdmech/abc123", tmp_path / "fetched", api=api)
    assert names == sorted(point_name(p) for p in points)
    local, fetched = collect(out), collect(tmp_path / "fetched")
    assert [(r.name, r.seed, r.capacity, r.parameters, r.final.alignment.A, r.circuit) for r in fetched] == \
        [(r.name, r.seed, r.capacity, r.parameters, r.final.alignment.A, r.circuit) for r in local]
    assert main(["report", str(tmp_path / "fetched")]) == 0
    page = (tmp_path / "fetched" / "report" / "report.html").read_text()
    assert '<h3 id="replicates">' in page and "(1 seed, no interval)" not in page


def test_capacity_table_and_report_are_logged_to_wandb(agent_runs):
    from kdmech.report.html import write_report
    from kdmech.report.wandb_report import CAPACITY_COLUMNS, log_report
    from kdmech.wandb_offline import wait_for_offline_run

    out, points, _, _ = agent_runs
    write_report(out)
    log_report(out, "agent-test", "offline")
    (folder,) = [f for f in (out / "wandb").glob("offline-run-*") if offline_config(f).get("kdmech", {}).get(
        "command") == "report"]
    assert wait_for_offline_run(folder)
    (row,) = offline_history(folder)
    assert row["capacity"]["_type"] == "table-file" and row["capacity"]["nrows"] == 2
    assert row["report"]["_type"] == "html-file"
    table = json.loads((folder / "files" / row["capacity"]["path"]).read_text())
    assert table["columns"] == CAPACITY_COLUMNS
    a = {r[0]: r[CAPACITY_COLUMNS.index("A")] for r in table["data"]}
    for p in points:
        step = json.loads(RunLayout(out).step_json(point_name(p), 8).read_text())
        assert a[point_name(p)] == pytest.approx(step["alignment"]["A"])
    assert any(k.startswith("capacity/A_vs_parameter_ratio") for k in row)


def test_a_teacher_is_shared_as_a_wandb_artifact(trained_teacher, tmp_path, monkeypatch, capsys):
    """`--teacher wandb-artifact://entity/project/name:version` downloads the model artifact once
    into out/teachers/ (W&B's public API stands in: no server here) and loads as a folder."""
    import wandb

    from kdmech.teacher import resolve_teacher
    from kdmech.models import load_lm

    teacher, _ = trained_teacher
    asked = []

    class Artifact:
        def download(self, root):
            shutil.copytree(teacher, root, dirs_exist_ok=True)

    class Api:
        def artifact(self, ref):
            asked.append(ref)
            if ref.startswith("me/kdmech/teacher-q"):
                return Artifact()
            raise ValueError(f"artifact '{ref}' not found")

    monkeypatch.setattr(wandb, "Api", Api)
    ref = "wandb-artifact://me/kdmech/teacher-q:v0"
    folder = resolve_teacher(ref, tmp_path / "out")
    assert Path(folder) == tmp_path / "out" / "teachers" / "me--kdmech--teacher-q--v0"
    assert resolve_teacher(ref, tmp_path / "out") == folder and asked == ["me/kdmech/teacher-q:v0"]  # cached
    model, _, kind = load_lm(folder)
    assert kind == "causal" and model.config.n_layer == 4
    assert main(["distill", "--teacher", "wandb-artifact://me/kdmech/nope:v1", "--out", str(tmp_path / "o2"),
                 "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdmech: error: teacher artifact 'me/kdmech/nope:v1' could not be downloaded")
    assert "\n" not in err and not (tmp_path / "o2" / "teachers" / "me--kdmech--nope--v1").exists()


def test_every_distill_option_reaches_distill_as_wandb_writes_it(capsys):
    """W&B's agent writes each parameter as `--key=str(value)`: lists (corpus files, devices,
    tags), the trainer controls and the text data options parse as `kdmech distill` options."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    point = {"data.files": ["a.txt", "b.txt"], "data.block_size": 64, "data.task_fraction": 0.25,
             "devices": [0, 1], "tags": ["capacity", "seed"], "trainer.precision": "bf16-mixed",
             "trainer.accumulate_grad_batches": 2, "analysis.background": True}
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"]
    with pytest.raises(SystemExit):
        main(["distill", "--teacher", "t", "--out", "o", *args, "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["files"] == ["a.txt", "b.txt"] and cfg["data"]["block_size"] == 64
    assert cfg["data"]["task_fraction"] == 0.25 and cfg["devices"] == [0, 1]
    assert cfg["tags"] == ["capacity", "seed"] and cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["trainer"]["accumulate_grad_batches"] == 2 and cfg["analysis"]["background"] is True


def test_online_sweep_config_runs_kdmech_distill_everywhere(tmp_path):
    """What `kdmech sweep` hands W&B online: the shared teacher and the sweep's folder as values
    every agent passes on, one MLP similarity for every width, the tags, and the file's command."""
    from kdmech.commands.sweep import AGENT_COMMAND, online_config
    from kdmech.sweep import load_sweep

    root = Path(__file__).resolve().parents[1]
    config = load_sweep(root / "sweeps" / "quick.yaml")
    cfg = online_config(config, "wandb-artifact://me/kdmech/teacher-quick:v0", Path("runs/sweeps/quick"), "cka",
                        ["study"])
    params = cfg["parameters"]
    assert params["teacher"] == {"value": "wandb-artifact://me/kdmech/teacher-quick:v0"}
    assert params["out"] == {"value": "runs/sweeps/quick"} and params["tags"] == {"value": ["study"]}
    assert params["analysis.mlp_similarity"] == {"value": "cka"} and cfg["command"] == AGENT_COMMAND
    assert config["parameters"]["teacher"] == {"value": "tiny"}  # the file's own config is untouched
    bare = {"name": "b", "method": "grid", "parameters": {"teacher": {"value": "gpt2"}, "capacity.width": {"values": [1.0]}}}
    assert online_config(bare, "gpt2", Path("o"), "svd3", None)["parameters"]["analysis.mlp_similarity"] == {"value": "svd3"}


def test_every_point_of_every_shipped_sweep_file_is_a_distill_command(capsys):
    """For each file in sweeps/, the command W&B's agent builds for every point (the file's
    `command:` with `${args}` expanded by W&B's own code) is `kdmech distill` with options it
    accepts, the teacher and folder included (no `--teacher=tiny` refusal, no missing --out)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    from kdmech.sweep import expand, load_sweep

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "sweeps").glob("*.yaml")):
        config = load_sweep(path)
        command = create_sweep_command(list(config["command"]))
        assert command == COMMAND, path
        for point in expand(config):
            args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args"]
            with pytest.raises(SystemExit):
                main(["distill", *args, "--print_config"])
            cfg = yaml.safe_load(capsys.readouterr().out)
            assert cfg["teacher"] == "tiny" and cfg["out"] == config["parameters"]["out"]["value"]
            assert cfg["capacity"]["depth"] == point["capacity.depth"], path


def test_options_inside_lists_are_written_as_plain_values():
    """distill-shared's `capacities` (a list of dataclasses) reach config.yaml and W&B as
    mappings `--config` reads back, not as their Python repr."""
    from kdmech.models import CapacitySpec
    from kdmech.run_config import plain

    assert plain({"capacities": [CapacitySpec(depth=0.5), CapacitySpec(depth=0.25, width=0.5)], "out": Path("o")}) == {
        "capacities": [{"depth": 0.5, "width": 1.0, "heads": 1.0, "params": None, "rounds": 1},
                       {"depth": 0.25, "width": 0.5, "heads": 1.0, "params": None, "rounds": 1}],
        "out": "o"}
