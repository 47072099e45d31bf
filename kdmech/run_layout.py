"""The one place that knows a run folder's layout (quickstart, distill, distill-shared, sweep):

    teacher/                         the tiny teacher (train-teacher's output)
    students/<name>/                 save_pretrained student + tokenizer + provenance.json
    checkpoints/<name>/last.ckpt     Lightning checkpoint for --resume (+ previous.ckpt, the W&B
                                     run id and wandb_history.jsonl, the journal of its rows)
    analysis/<name>/step_<N>.json    a checkpoint's pair analysis (CheckpointRecord)
    analysis/<name>/circuit_step_<N>.json   its circuits and probes, at circuit steps
    analysis/<name>/prompts.json     the exact analysis prompts
    analysis/<name>/history.csv, steps.csv  the restructuring history
    pair-analysis/<name>/analysis.json      `kdmech analyze` of the final student
    timeline/<name>/                 events.json and the restructuring pictures
    report/report.html               the capacity report
    summary.json | sweep.json        the run's final table / the sweep's state
    wandb/                           W&B runs (offline-run-*)
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_STEP = re.compile(r"^(?:circuit_)?step_(\d+)\.json$")


def step_of(path: Path) -> int:
    """N of a step_<N>.json or circuit_step_<N>.json file."""
    return int(_STEP.match(Path(path).name).group(1))


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        root = self.root.root if isinstance(self.root, RunLayout) else self.root
        object.__setattr__(self, "root", Path(root))

    # --- models and training -------------------------------------------------------------
    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    def student(self, name: str) -> Path:
        return self.root / "students" / name

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def run_config(self, name: str) -> Path:
        """The run's resolved options (`--config` repeats the run; kdmech.run_config)."""
        return self.checkpoints(name) / "config.yaml"

    def wandb_run_id(self, name: str) -> Path:
        return self.checkpoints(name) / "wandb_run_id"

    def wandb_journal(self, name: str) -> Path:
        """Every row the run logged to W&B, for an exact offline resume (kdmech.tracking)."""
        return self.checkpoints(name) / "wandb_history.jsonl"

    @property
    def wandb(self) -> Path:
        """W&B's save_dir (it writes its own wandb/ folder inside)."""
        return self.root

    # --- analyses ------------------------------------------------------------------------
    @property
    def analysis_root(self) -> Path:
        return self.root / "analysis"

    def analysis(self, name: str) -> Path:
        return self.analysis_root / name

    def step_json(self, name: str, step: int) -> Path:
        return self.analysis(name) / f"step_{step}.json"

    def circuit_json(self, name: str, step: int) -> Path:
        return self.analysis(name) / f"circuit_step_{step}.json"

    def influence_png(self, name: str, step: int) -> Path:
        return self.analysis(name) / f"influence_step_{step}.png"

    def prompts_json(self, name: str) -> Path:
        return self.analysis(name) / "prompts.json"

    def history_csv(self, name: str) -> Path:
        return self.analysis(name) / "history.csv"

    def steps_csv(self, name: str) -> Path:
        return self.analysis(name) / "steps.csv"

    def steps(self, name: str) -> list[int]:
        """Analysed checkpoint steps of a student, in order."""
        return sorted(step_of(p) for p in self.analysis(name).glob("step_*.json"))

    def circuit_steps(self, name: str) -> list[int]:
        return sorted(step_of(p) for p in self.analysis(name).glob("circuit_step_*.json"))

    def analysed_students(self) -> list[str]:
        """Students with at least one analysed checkpoint, by name."""
        if not self.analysis_root.is_dir():
            return []
        return sorted(p.name for p in self.analysis_root.iterdir()
                      if p.is_dir() and any(p.glob("step_*.json")))

    def pair_analysis(self, name: str) -> Path:
        return self.root / "pair-analysis" / name

    def timeline(self, name: str) -> Path:
        return self.root / "timeline" / name

    @property
    def timeline_root(self) -> Path:
        return self.root / "timeline"

    # --- run-level files -----------------------------------------------------------------
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def sweep_state(self) -> Path:
        return self.root / "sweep.json"


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Write into `final.tmp`, then swap it into place: a failure leaves no half folder, and a
    crash during the swap loses nothing (the old folder is renamed aside first, `final.old`,
    and removed only once the new one is in place)."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():  # an earlier swap was cut off: bring it back
        old.rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
