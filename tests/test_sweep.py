"""Sweeps: W&B YAML expansion, the offline runner, resuming after a kill, refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdmech.cli import main
from kdmech.errors import KdmechError
from kdmech.sweep import expand, load_sweep, nested, point_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_sweep_yaml_loads_and_expands():
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        config = load_sweep(path)
        points = expand(config)
        assert points and all("capacity.depth" in p for p in points)
    assert len(expand(load_sweep(ROOT / "sweeps" / "capacity.yaml"))) == 3 * 2 * 3


def test_grid_random_and_bayes():
    config = {"method": "grid", "parameters": {"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]},
                                                "c": {"value": 0}}}
    assert len(expand(config)) == 6 and {p["c"] for p in expand(config)} == {0}
    config["method"] = "random"
    config["parameters"]["d"] = {"distribution": "uniform", "min": 0.1, "max": 0.9}
    draws = expand(config, count=20, seed=1)
    assert len(draws) == 20 and all(0.1 <= p["d"] <= 0.9 for p in draws)
    assert draws == expand(config, count=20, seed=1)
    config["method"] = "bayes"
    with pytest.raises(KdmechError, match="bayes search needs the W&B server"):
        expand(config)


def test_point_names_and_nesting():
    a = point_name({"capacity.depth": 0.5, "loss.temperature": 2.0})
    b = point_name({"capacity.depth": 0.5, "loss.temperature": 4.0})
    assert a.startswith("d0.5-w1-h1-s0-") and a != b
    # every value but where the point runs is part of its identity; seeds differ only in -s<N>
    seed1 = point_name({"capacity.depth": 0.5, "loss.temperature": 2.0, "training.seed": 1, "teacher": "x", "out": "o"})
    assert seed1 == a.replace("-s0-", "-s1-")
    assert point_name({"capacity.depth": 0.25, "capacity.width": 0.5, "training.seed": 2}) == "d0.25-w0.5-h1-s2"
    # the init is spelled out (inits of one configuration differ only there), a capacity in
    # parameters is p<fraction>
    imp = point_name({"capacity.depth": 0.5, "loss.temperature": 2.0, "init": "importance"})
    assert imp == a.replace("-s0-", "-importance-s0-")
    assert point_name({"capacity.params": 0.5, "init": "every_k", "training.seed": 1}) == "p0.5-every_k-s1"
    assert nested({"capacity.depth": 0.5, "training.seed": 1}) == {"capacity": {"depth": 0.5}, "training": {"seed": 1}}


def test_bad_sweeps_are_refused(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters:\n  teacher: {value: tiny}\n  capacity.depth: {values: [0.5, 3]}\n")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o"), "--wandb", "disabled"]) == 2
    assert "depth ratio 3.0 is outside (0, 1]" in capsys.readouterr().err
    bad.write_text("method: grid\nparameters:\n  teacher: {value: tiny}\n  capacity.depthh: {values: [0.5]}\n")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o"), "--wandb", "disabled"]) == 2
    assert "does not accept option 'depthh'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_online_without_a_key_fails_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(WANDB_MODE="online", HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path))
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("method: grid\nparameters:\n  teacher: {value: some-model}\n  capacity.depth: {values: [0.5]}\n")
    proc = subprocess.run([sys.executable, "-m", "kdmech", "sweep", str(sweep_file), "--out", str(tmp_path / "o"),
                           "--pair_analyses", "false"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("kdmech: error: could not create the W&B sweep")


def test_killed_sweep_resumes_only_missing_points(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    config = {"name": "t", "method": "grid", "parameters": {
        "teacher": {"value": str(teacher)}, "capacity.depth": {"values": [0.25, 0.5, 0.75]},
        "training.steps": {"value": 10}, "analysis.every_n_steps": {"value": 0},
        "analysis.per_type": {"value": 8}, "analysis.min_prompts": {"value": 8}, "analysis.circuits": {"value": False}}}
    sweep_file = tmp_path / "t.yaml"
    sweep_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "kdmech", "sweep", str(sweep_file), "--out", str(out), "--wandb", "disabled",
           "--progress", "false", "--pair_analyses", "false"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    state = out / "sweep.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["done"]):
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = set(json.loads(state.read_text())["done"])
    assert 1 <= len(done_before) < 3
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    for name in done_before:
        assert f"{name}: done already, skipped" in second.stdout
    done_after = json.loads(state.read_text())["done"]
    assert set(done_after) == {point_name(p) for p in expand(config)}
    assert sorted(n[:n.index("-s0-")] for n in done_after) == ["d0.25-w1-h1", "d0.5-w1-h1", "d0.75-w1-h1"]
    assert (out / "report" / "report.html").exists()
