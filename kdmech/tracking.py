"""Weights & Biases policy: offline unless the user has configured W&B.

Offline runs land in `<run dir>/wandb/offline-run-*` and never touch the network; `wandb sync`
uploads them later and `wandb leet <dir>` shows them in a terminal. A run goes online only
when asked (`mode="online"` or WANDB_MODE=online) or when an API key is configured
(WANDB_API_KEY, or a `wandb login` entry in ~/.netrc) and the mode is "auto".

Resuming (`--resume`). Online, W&B itself continues the stored run id (`resume="allow"`).
Offline, W&B can neither append to an earlier run's files nor be relied on to have written them:
it buffers its log in memory (up to `x_transaction_log_flush_interval`, 15 s) and a killed run
loses that part. So every row a run logs is first appended to a journal of our own
(`checkpoints/<run>/wandb_history.jsonl`; images, table rows and artifacts as references to
the run folder's files). A resumed offline run starts a new offline run with the same id,
replays the journal's rows below the resumed step (`start_logging`; the steps from there on
are logged again by the training), and, once it has closed (`finish`), moves the earlier
folders of that id into `wandb/superseded/`: one `offline-run-*` folder holds the run's whole
history, once, and `wandb sync <dir>/wandb/offline-run-*` uploads it as one run.
"""

from __future__ import annotations

import json
import netrc
import os
import re
import shutil
from pathlib import Path
from typing import Literal

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from kdmech.errors import KdmechError
from kdmech.wandb_offline import (offline_folders, offline_history, wait_for_offline_run,
                                  wandb_records)

__all__ = ["STEP_KEY", "WandbMode", "WandbSink", "begin_run", "finish", "make_logger", "offline_folders",
           "offline_history", "read_journal", "resolve_mode", "start_logging", "wait_for_offline_run",
           "wandb_records", "where"]

WandbMode = Literal["auto", "online", "offline", "disabled"]
STEP_KEY = "trainer/global_step"
"""The x-axis of every kdmech W&B row (Lightning's WandbLogger defines it)."""
SUPERSEDED = "superseded"
"""Where `finish` moves the offline folders a resumed run has replaced (inside wandb/: out of
the `offline-run-*` glob, and one level deeper than `wandb sync <wandb dir>` looks)."""


def _key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: WandbMode = "auto") -> str:
    if mode not in ("auto", "online", "offline", "disabled"):
        raise KdmechError(f"wandb mode {mode!r} is unknown; accepted: auto, online, offline, disabled")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _key_configured() else "offline"


class JournaledWandbLogger(WandbLogger):
    """Lightning's WandbLogger that appends every row it logs to `journal` (one JSON line per
    row, written before W&B sees it) and logs incremental tables and file artifacts for
    `WandbSink`. Rows must carry their step (all of kdmech's do)."""

    def __init__(self, *args, journal: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Lightning passes anonymous=None, which wandb 0.31 warns about on every run ("has no effect")
        self._wandb_init.pop("anonymous", None)
        self.journal = Path(journal) if journal is not None else None
        self.tables: dict = {}
        """Incremental W&B tables by key (continued across a resume)."""
        self.superseded: list[Path] = []
        """Earlier offline folders of this run, moved aside by `finish`."""
        self._quiet = False

    def _record(self, step, row: dict) -> None:
        if self.journal is None or self._quiet:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as fh:
            fh.write(json.dumps({"step": step, "row": row}, allow_nan=True) + "\n")

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        self._record(step, {k: _journal_value(v) for k, v in metrics.items()})
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_image(self, key: str, images: list, step=None, **kwargs) -> None:
        if all(isinstance(i, (str, Path)) for i in images):
            value = {"_kdmech": "images", "paths": [str(Path(i).resolve()) for i in images]}
        else:
            value = {"_kdmech": "unreplayable"}
        self._record(step, {key: value})
        quiet, self._quiet = self._quiet, True
        try:
            super().log_image(key, images, step, **kwargs)
        finally:
            self._quiet = quiet

    @rank_zero_only
    def log_table_rows(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """Add `rows` to the run's incremental table `key` (W&B logs the increment)."""
        import wandb

        self._record(step, {key: {"_kdmech": "table_rows", "columns": columns, "rows": rows}})
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = wandb.Table(columns=columns, log_mode="INCREMENTAL")
        for row in rows:
            table.add_data(*row)
        self.experiment.log({key: table, STEP_KEY: step})

    @rank_zero_only
    def log_table(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """A whole W&B table `key` at `step` (a new one each time it is logged)."""
        import wandb

        self._record(step, {key: {"_kdmech": "table", "columns": columns, "rows": rows}})
        self.experiment.log({key: wandb.Table(columns=columns, data=rows), STEP_KEY: step})

    @rank_zero_only
    def log_files_artifact(self, name: str, kind: str, files: list, step: int, metadata: dict | None = None) -> None:
        """A versioned artifact of `files` (which must stay where they are: a replay reads them)."""
        import wandb

        files = [str(Path(f).resolve()) for f in files]
        self._record(step, {f"artifact/{name}": {"_kdmech": "artifact", "name": name, "type": kind,
                                                  "files": files, "metadata": metadata}})
        artifact = wandb.Artifact(artifact_name(name), type=kind, metadata=metadata)
        for f in files:
            artifact.add_file(f)
        self.experiment.log_artifact(artifact)

    @rank_zero_only
    def use_model(self, ref: str) -> bool:
        """Declare the model artifact `ref` (name:alias or entity/project/name:version) an input of
        this run: W&B's lineage graph then links the teacher to its students. Online only (W&B
        refuses `use_artifact` offline); False when it is not used (offline, or unknown to W&B)."""
        if self._offline:
            return False
        try:
            self.experiment.use_artifact(ref, type="model")
        except Exception as e:  # noqa: BLE001 - a missing artifact only costs the lineage edge
            print(f"[wandb] teacher artifact {ref} not linked to {self.experiment.name} ({str(e).splitlines()[0]})")
            return False
        return True


def artifact_name(text: str) -> str:
    """`text` as a W&B artifact name (letters, digits, dashes, underscores and dots)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _journal_value(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return {"_kdmech": "unreplayable"}


def make_logger(save_dir: str | Path, name: str, group: str, mode: WandbMode = "auto",
                project: str = "kdmech", run_id: str | None = None, config: dict | None = None,
                job_type: str | None = None, journal: Path | None = None, entity: str | None = None,
                tags: list[str] | None = None):
    """A Lightning WandbLogger (journaling every row to `journal`), or None when W&B is
    disabled. With `run_id` the run is resumed: online by W&B, offline by `start_logging` (call
    it, for every run, once the step it starts at is known)."""
    resolved = resolve_mode(mode)
    if resolved == "disabled":
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return JournaledWandbLogger(project=project, name=name, group=group, save_dir=str(save_dir),
                                offline=resolved == "offline", id=run_id, resume="allow" if run_id else None,
                                config=config, job_type=job_type, journal=journal, entity=entity,
                                tags=list(tags) if tags else None, settings={"quiet": True, "console": "off"})


def where(run) -> str:
    """The line that tells a user where a W&B run is: its URL online, the `wandb sync` command
    that uploads it offline."""
    if getattr(run, "offline", False):
        return f"W&B run {run.name} saved offline; upload it with: wandb sync {Path(run.dir).parent}"
    return f"W&B run {run.name}: {run.url}"


def finish(logger=None) -> None:
    """Close the current W&B run so the next one in this process starts clean; then move the
    earlier offline folders a resumed `logger` replaced out of the way."""
    import wandb

    offline_folder, line = None, None
    if wandb.run is not None:
        if getattr(wandb.run, "offline", False):
            offline_folder = Path(wandb.run.dir).parent
        line = where(wandb.run)
        wandb.finish()
    if offline_folder is not None:  # readers (wandb sync, tests) see the whole run once we return
        wait_for_offline_run(offline_folder, timeout=30)
    if line:
        print(line)
    superseded = getattr(logger, "superseded", [])
    # wandb.finish() can return before wandb-core has written the run's log to disk: move the
    # earlier folders only once the new one is complete (else they stay; a resume replaces them)
    if superseded and not wait_for_offline_run(logger.run_folder):
        print(f"[wandb] {logger.run_folder.name} was not complete on disk in time; the earlier offline "
              f"folders of its run stay beside it")
        superseded = []
    for folder in superseded:
        if folder.exists():
            aside = folder.parent / SUPERSEDED / folder.name
            aside.parent.mkdir(exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            folder.rename(aside)
    if logger is not None and hasattr(logger, "superseded"):
        logger.superseded = []


def read_journal(path: Path) -> list[tuple[int | None, dict]]:
    """(step, row) of every whole line of a journal (a line cut off by a kill is dropped)."""
    if not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((entry["step"], entry["row"]))
    return out


def begin_run(logger, run_id_file: Path, step: int = 0) -> int:
    """Store the W&B run id where --resume finds it, then `start_logging` from `step`."""
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    run_id_file.write_text(logger.experiment.id)
    return start_logging(logger, step)


def start_logging(logger, step: int = 0) -> int:
    """Begin `logger`'s run at training step `step` (0 for a fresh run, the checkpoint's step for
    a resumed one): the journal keeps only its rows below `step` (the training logs the later
    ones again); a resumed offline run (an id earlier offline folders hold) replays them into
    its new folder and has those folders moved aside by `finish` (online, W&B holds them
    already). Returns the number of rows replayed."""
    if logger is None or getattr(logger, "journal", None) is None:
        return 0
    if step > 0 and not logger.journal.exists():  # a run from before the journal: leave its folders alone
        print(f"[wandb] no {logger.journal.name} to replay; the resumed offline run holds only the steps from "
              f"{step} on (the earlier ones stay in their own offline-run folders)")
        return 0
    kept = [(s, row) for s, row in read_journal(logger.journal) if s is not None and s < step]
    logger.journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = logger.journal.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"step": s, "row": r}, allow_nan=True) + "\n" for s, r in kept))
    tmp.replace(logger.journal)
    if not logger._offline:
        return 0
    run = logger.experiment
    new = Path(run.dir).parent.resolve()
    for s, row in kept:
        _replay(logger, s, row)
    logger.superseded = [f for f in offline_folders(logger.save_dir, run.id) if f.resolve() != new]
    logger.run_folder = new
    return len(kept)


def _replay(logger: JournaledWandbLogger, step: int, row: dict) -> None:
    """Log one journal row again (without journaling it twice)."""
    plain, quiet, logger._quiet = {}, logger._quiet, True
    try:
        for key, value in row.items():
            kind = value.get("_kdmech") if isinstance(value, dict) else None
            if kind is None:
                plain[key] = value
            elif kind == "images":
                logger.log_image(key, value["paths"], step)
            elif kind == "table_rows":
                logger.log_table_rows(key, value["columns"], value["rows"], step)
            elif kind == "table":
                logger.log_table(key, value["columns"], value["rows"], step)
            elif kind == "artifact":
                logger.log_files_artifact(value["name"], value["type"], value["files"], step, value["metadata"])
            elif kind == "unreplayable":
                print(f"[wandb] {key} at step {step} cannot be replayed into the resumed run")
        if plain:
            logger.experiment.log({**plain, STEP_KEY: step})
    finally:
        logger._quiet = quiet


class WandbSink:
    """Logs checkpoint records to a Lightning logger (any: scalars) and, for a W&B logger, the
    restructuring as W&B data (kdmech.wandb_restructuring: per-node influence, attribution and
    circuit membership scalars, the matching per step, a run-wide incremental nodes table, the events),
    an influence heatmap per checkpoint and a versioned circuit artifact per circuit step. Keys
    carry `prefix` when several students share a run."""

    def __init__(self, logger, prefix: str = "", artifact_name: str | None = None):
        self.logger, self.prefix = logger, prefix
        self.artifact_name = artifact_name
        self.nodes: dict[str, list[str]] = {}
        """The nodes of the last checkpoint, teacher and student (for circuit membership)."""

    @property
    def _wandb(self) -> bool:
        return isinstance(self.logger, JournaledWandbLogger)

    def checkpoint(self, record, influence_png: Path | None = None) -> None:
        from kdmech import wandb_restructuring as wr

        if self.logger is None:
            return
        r, a = record.pair, record.pair.alignment
        metrics = {"ld_teacher": r.logit_diff["teacher"], "ld_student": r.logit_diff["student"],
                   "A": a.A, "A_heads": a.A_heads, "A_mlp": a.A_mlp,
                   "mean_similarity": a.mean_similarity,
                   "worst_drop_student": r.worst_drop.student.value,
                   "worst_drop_teacher": r.worst_drop.teacher.value,
                   "worst_drop_ratio": r.worst_drop.ratio}
        self.nodes = {who: list(r.influence[who]) for who in ("student", "teacher")}
        self.logger.log_metrics({f"analysis/{self.prefix}{k}": v for k, v in metrics.items()}
                                | wr.influence_scalars(r, self.prefix)
                                | wr.attribution_scalars(record, self.prefix), step=r.step)
        if not self._wandb:
            return
        self.logger.log_table(f"analysis/{self.prefix}matching", wr.MATCHING_COLUMNS, wr.matching_rows(r), r.step)
        # One table for the whole run, grown at every checkpoint (W&B incremental mode): W&B's
        # charts can then follow any node over steps.
        self.logger.log_table_rows(f"analysis/{self.prefix}nodes", wr.NODES_COLUMNS, wr.node_rows(record), r.step)
        if attribution := wr.attribution_rows(record):
            self.logger.log_table_rows(f"analysis/{self.prefix}attribution", wr.ATTRIBUTION_COLUMNS, attribution,
                                       r.step)
        if influence_png is not None:
            self.logger.log_image(f"analysis/{self.prefix}influence", images=[influence_png], step=r.step)

    def circuits(self, circuits, files: list) -> None:
        """Circuit sizes and each node's membership as scalars, the step's JSON files as a
        versioned artifact."""
        from kdmech.wandb_restructuring import membership_scalars

        if self.logger is None or not self._wandb:
            return
        if not circuits.error:
            s, t = circuits.student, circuits.teacher
            metrics = {f"circuit/{self.prefix}student_nodes": len(s.nodes),
                       f"circuit/{self.prefix}student_completeness": s.completeness,
                       "circuit/teacher_nodes": len(t.nodes)}
            if s.edges_pruned:
                metrics[f"circuit/{self.prefix}student_edges"] = len(s.edges)
            self.logger.log_metrics(metrics | membership_scalars(circuits, self.nodes, self.prefix),
                                    step=circuits.step)
        self.logger.log_files_artifact(f"circuit-{self.artifact_name or self.logger.experiment.name}",
                                       "circuit", files, circuits.step, {"step": circuits.step})

    def events(self, events: list[dict], step: int) -> None:
        """The timeline's restructuring events as the table timeline/<prefix>event_table."""
        from kdmech.wandb_restructuring import EVENT_COLUMNS, event_rows

        if self._wandb:
            self.logger.log_table(f"timeline/{self.prefix}event_table", EVENT_COLUMNS, event_rows(events), step)

    def images(self, key: str, paths: list, step: int) -> None:
        if self._wandb:
            for path in paths:
                self.logger.log_image(f"{key}/{self.prefix}{path.stem}", images=[str(path)], step=step)
