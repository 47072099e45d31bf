"""A sweep's capacity report from W&B: every finished run of the sweep, whichever machine's agent
ran it, logged its students' analysis records as an `analysis` artifact (kdmech.run_summary.
log_finals). This downloads them through W&B's public API into a folder laid out like a local
sweep's (students/<name>/provenance.json + config.yaml, analysis/<name>/*.json, sweep.json with
each student's result), so the report is the same code as offline."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from kdmech.errors import KdmechError
from kdmech.run_layout import CONFIG_YAML, PROVENANCE_JSON, RunLayout

STUDENT_FILES = (PROVENANCE_JSON, CONFIG_YAML)
"""Artifact files that belong in students/<name>/ (the rest go to analysis/<name>/)."""


def fetch_sweep(ref: str, root: str | Path, api=None) -> list[str]:
    """Download the analysis artifacts of sweep `ref` (entity/project/sweep_id) into `root`;
    the names of the students found. `api`: a `wandb.Api` (default: a new one)."""
    if api is None:
        import wandb

        api = wandb.Api()
    try:
        sweep = api.sweep(ref)
        runs = list(sweep.runs)
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmechError(f"W&B sweep {ref!r} could not be read ({first}); expected entity/project/sweep_id "
                          f"of a sweep this W&B account can see") from None
    layout, results = RunLayout(root), {}
    for run in runs:
        if getattr(run, "state", "finished") != "finished":
            continue
        latest = {}
        for artifact in run.logged_artifacts():
            if artifact.type == "analysis":
                latest[artifact.metadata["student"]] = artifact  # the last version a run logged wins
        for name, artifact in latest.items():
            _place(artifact, layout, name)
            results[name] = artifact.metadata.get("result", {}) | {"wandb_run": getattr(run, "path", None)}
    if not results:
        raise KdmechError(f"W&B sweep {ref!r} has no finished run with an analysis artifact yet")
    layout.sweep_state.write_text(json.dumps(
        {"name": ref, "source": f"W&B sweep {ref}", "students": list(results.values()), "done": results}, indent=1))
    return sorted(results)


def _place(artifact, layout: RunLayout, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        artifact.download(root=tmp)
        for f in Path(tmp).iterdir():
            dest = layout.student(name) if f.name in STUDENT_FILES else layout.analysis(name)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / f.name)
