"""The one place that knows a run folder's layout (quickstart, distill, distill-shared, sweep)
and the names of the files a model folder or an analysis folder holds. `ENTRIES` is the
layout as a table; `describe()` prints it (the README's Output block is that text, checked by
a test), and `RunLayout` has a path for every entry.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# Files inside the folders one command writes (also outside a run folder: `train-teacher --out`,
# `distill --out`, `analyze --out`)
EVAL_JSON = "eval.json"
"""A trained teacher's held-out scores (train-teacher)."""
PROVENANCE_JSON = "provenance.json"
"""A student's origin: every tensor's teacher source, capacity, init, seed (distill)."""
CONFIG_YAML = "config.yaml"
"""The resolved options of the run that wrote the folder (`--config` repeats it)."""
ANALYSIS_JSON = "analysis.json"
"""`kdmech analyze`'s result (kdmech.analysis.analyze_result)."""
PROMPTS_JSON = "prompts.json"
"""The exact analysis prompts (kdmech.tasks.PromptSet)."""
EVENTS_JSON = "events.json"
"""A student's restructuring events (kdmech timeline)."""
REPORT_HTML = "report.html"
LAST_CKPT, PREVIOUS_CKPT = "last.ckpt", "previous.ckpt"

ENTRIES: tuple[tuple[str, str], ...] = (
    ("teacher/", "the tiny teacher: model + tokenizer + eval.json (held-out top-1, LD) + config.yaml"),
    ("students/<name>/", "model + tokenizer + provenance.json (origin of every tensor) + config.yaml"),
    ("checkpoints/<name>/last.ckpt", "Lightning checkpoint for --resume, at every analysis step"),
    ("checkpoints/<name>/previous.ckpt", "the one before, the fallback if last.ckpt is cut off"),
    ("checkpoints/<name>/config.yaml", "the run's resolved options: `kdmech distill --config` repeats it"),
    ("checkpoints/<name>/wandb_run_id", "the W&B run id a resume continues"),
    ("checkpoints/<name>/wandb_history.jsonl", "the journal of every W&B row (an exact offline resume)"),
    ("analysis/<name>/prompts.json", "exact token ids of clean/corrupted prompts, answers, positions"),
    ("analysis/<name>/step_<N>.json", "logit_diff, influence, matching, alignment, worst_drop, options"),
    ("analysis/<name>/circuit_step_<N>.json", "circuits (nodes, edges) and probes at circuit steps"),
    ("analysis/<name>/influence_step_<N>.png", "teacher beside student heatmap"),
    ("analysis/<name>/history.csv", "the restructuring history: a row per analysed step and student node"),
    ("analysis/<name>/steps.csv", "a row per analysed step: A and its parts, LDs, worst-drop ratio"),
    ("pair-analysis/<name>/", "`kdmech analyze` of the final student: analysis.json, prompts.json, PNGs"),
    ("timeline/<name>/", "events.json and the restructuring pictures (kdmech timeline)"),
    ("report/", "report.html, the capacity report, and its PNGs"),
    ("summary.json", "the final table as JSON (quickstart, distill-shared)"),
    ("sweep.json", "a sweep's points and their state (sweeps only)"),
    ("wandb/", "offline-run-*: one W&B run per model and analysis, a study's in one group"),
)
"""Every path of a run folder (relative, `<name>` a student, `<N>` a step) and what it holds."""


def describe(root: str = "runs/quickstart/") -> str:
    """The run folder's layout as text (the README's Output block)."""
    width = max(len(path) for path, _ in ENTRIES) + 3
    return "\n".join([root] + [f"  {path:<{width}}{what}" for path, what in ENTRIES])


def entry_pattern(path: str) -> re.Pattern:
    """A regex matching an `ENTRIES` path and everything inside it."""
    rx = re.escape(path.rstrip("/")).replace(re.escape("<name>"), r"[^/]+").replace(re.escape("<N>"), r"\d+")
    return re.compile(rx.replace(re.escape("*"), r"[^/]*") + "(/.*)?$")


def unlisted(root: str | Path) -> list[str]:
    """Files under the run folder `root` that no `ENTRIES` path covers (lock files aside)."""
    root, patterns = Path(root), [entry_pattern(path) for path, _ in ENTRIES]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [f for f in files if not f.endswith(".lock") and not any(p.match(f) for p in patterns)]


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

    @property
    def teacher_eval(self) -> Path:
        return self.teacher / EVAL_JSON

    def student(self, name: str) -> Path:
        return self.root / "students" / name

    def provenance(self, name: str) -> Path:
        return self.student(name) / PROVENANCE_JSON

    def student_config(self, name: str) -> Path:
        """The copy of the run's config.yaml kept with the student."""
        return self.student(name) / CONFIG_YAML

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def run_config(self, name: str) -> Path:
        """The run's resolved options (`--config` repeats the run; kdmech.run_config)."""
        return self.checkpoints(name) / CONFIG_YAML

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
        return self.analysis(name) / PROMPTS_JSON

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

    def pair_analysis_json(self, name: str) -> Path:
        return self.pair_analysis(name) / ANALYSIS_JSON

    def events_json(self, name: str) -> Path:
        return self.timeline(name) / EVENTS_JSON

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
    def report_html(self) -> Path:
        return self.report / REPORT_HTML

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
