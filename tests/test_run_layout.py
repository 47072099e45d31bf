"""`RunLayout` is the one place that names a run's files: the README's Output block is its
`describe()`, no other module of kdmech spells one of its file names, and (in the pipeline
tests) every file a real quickstart writes is one of its `ENTRIES`."""

import ast
import re
from pathlib import Path

import pytest

from kdmech import run_layout
from kdmech.run_layout import ENTRIES, RunLayout, describe, entry_pattern, unlisted

ROOT = Path(__file__).resolve().parent.parent
NAMES = {v for k, v in vars(run_layout).items() if k.isupper() and isinstance(v, str) and "." in v}


def test_readme_output_block_is_the_layout():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Output\n```\n(.*?)```", readme, re.S).group(1)
    assert block.rstrip("\n") == describe()


def test_no_other_module_spells_a_run_file_name():
    spelled = []
    for path in (ROOT / "kdmech").rglob("*.py"):
        if path.name == "run_layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES | {"sweep.json", "summary.json"}:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert spelled == []


@pytest.mark.parametrize("path,example,matches", [
    ("analysis/<name>/step_<N>.json", "analysis/d0.5-w1-h1/step_40.json", True),
    ("analysis/<name>/step_<N>.json", "analysis/d0.5-w1-h1/circuit_step_40.json", False),
    ("analysis/<name>/step_<N>.json", "analysis/a/b/step_40.json", False),
    ("students/<name>/", "students/d0.5-w1-h1/model.safetensors", True),
    ("wandb/", "wandb/offline-run-20261206_1/files/config.yaml", True),
    ("summary.json", "summary.json.tmp", False),
])
def test_entry_patterns(path, example, matches):
    assert bool(entry_pattern(path).match(example)) is matches


def test_unlisted_names_what_the_layout_does_not_hold(tmp_path):
    for rel in ("summary.json", "analysis/s/step_0.json", "notes.txt", "analysis/s/extra.json", ".teacher.lock"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert unlisted(tmp_path) == ["analysis/s/extra.json", "notes.txt"]


def test_every_entry_has_a_path_method(tmp_path):
    layout = RunLayout(tmp_path)
    paths = {layout.teacher, layout.student("n"), layout.checkpoints("n") / run_layout.LAST_CKPT,
             layout.run_config("n"), layout.wandb_run_id("n"), layout.wandb_journal("n"), layout.prompts_json("n"),
             layout.step_json("n", 3), layout.circuit_json("n", 3), layout.influence_png("n", 3),
             layout.history_csv("n"), layout.steps_csv("n"), layout.pair_analysis("n"), layout.timeline("n"),
             layout.report, layout.summary, layout.sweep_state, layout.wandb / "wandb" / "offline-run-x", layout.checkpoints("n") / run_layout.PREVIOUS_CKPT}
    rel = {p.relative_to(tmp_path).as_posix() for p in paths}
    for entry, _ in ENTRIES:
        assert any(entry_pattern(entry).match(r) for r in rel), entry
