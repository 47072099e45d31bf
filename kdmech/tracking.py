"""Weights & Biases policy: offline unless the user has configured W&B.

Offline runs land in `<run dir>/wandb/offline-run-*` and never touch the network; `wandb sync`
uploads them later and `wandb leet <dir>` shows them in a terminal. A run goes online only
when asked (`mode="online"` or WANDB_MODE=online) or when an API key is configured
(WANDB_API_KEY, or a `wandb login` entry in ~/.netrc) and the mode is "auto".
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Literal

from kdmech.errors import KdmechError

WandbMode = Literal["auto", "online", "offline", "disabled"]


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


def make_logger(save_dir: str | Path, name: str, group: str, mode: WandbMode = "auto",
                project: str = "kdmech", run_id: str | None = None, config: dict | None = None,
                job_type: str | None = None):
    """A Lightning WandbLogger, or None when W&B is disabled."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_mode(mode)
    if resolved == "disabled":
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(project=project, name=name, group=group, save_dir=str(save_dir),
                         offline=resolved == "offline", id=run_id, resume="allow" if run_id else None,
                         config=config, job_type=job_type, settings={"quiet": True, "console": "off"})
    return logger


def finish() -> None:
    """Close the current W&B run so the next one in this process starts clean."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


class WandbSink:
    """Logs checkpoint records to a Lightning logger (any: scalars) and, for a W&B logger, a
    run-wide incremental nodes table, an influence heatmap per checkpoint and a versioned
    circuit artifact per circuit step. Keys carry `prefix` when several students share a run."""

    def __init__(self, logger, prefix: str = "", artifact_name: str | None = None):
        self.logger, self.prefix = logger, prefix
        self.artifact_name = artifact_name
        self.nodes_table = None

    @property
    def _wandb(self) -> bool:
        return self.logger is not None and hasattr(self.logger, "experiment")

    def checkpoint(self, record) -> None:
        if self.logger is None:
            return
        r, a = record.pair, record.pair.alignment
        metrics = {"ld_teacher": r.logit_diff["teacher"], "ld_student": r.logit_diff["student"],
                   "A": a.A, "A_heads": a.A_heads, "A_mlp": a.A_mlp,
                   "mean_similarity": a.mean_similarity,
                   "worst_drop_student": r.worst_drop["student"]["value"],
                   "worst_drop_teacher": r.worst_drop["teacher"]["value"],
                   "worst_drop_ratio": r.worst_drop["ratio"]}
        self.logger.log_metrics({f"analysis/{self.prefix}{k}": v for k, v in metrics.items()}, step=r.step)
        if not self._wandb:
            return
        import matplotlib.pyplot as plt
        import wandb

        from kdmech.report.heatmap import influence_figure

        t_inf, s_inf = r.influence["teacher"], r.influence["student"]
        if self.nodes_table is None:
            # One table for the whole run, grown at every checkpoint (W&B incremental mode):
            # W&B's charts can then follow any node over steps.
            self.nodes_table = wandb.Table(columns=["step", "student_node", "influence_student",
                                                    "matched_teacher_node", "influence_teacher",
                                                    "similarity"], log_mode="INCREMENTAL")
        for m in r.matching:
            self.nodes_table.add_data(r.step, m.student, s_inf[m.student], m.teacher,
                                      t_inf[m.teacher], m.similarity)
        self.logger.experiment.log({f"analysis/{self.prefix}nodes": self.nodes_table,
                                    "trainer/global_step": r.step})
        fig = influence_figure(t_inf, s_inf, f"influence at step {r.step}")
        self.logger.log_image(f"analysis/{self.prefix}influence", images=[wandb.Image(fig)], step=r.step)
        plt.close(fig)

    def circuits(self, circuits, files: list) -> None:
        """Circuit sizes as scalars and the step's JSON files as a versioned artifact."""
        if self.logger is None or not self._wandb:
            return
        if not circuits.error:
            s, t = circuits.student, circuits.teacher
            metrics = {f"circuit/{self.prefix}student_nodes": len(s.nodes),
                       f"circuit/{self.prefix}student_completeness": s.completeness,
                       "circuit/teacher_nodes": len(t.nodes)}
            if s.edges_pruned:
                metrics[f"circuit/{self.prefix}student_edges"] = len(s.edges)
            self.logger.log_metrics(metrics, step=circuits.step)
        import wandb

        artifact = wandb.Artifact(f"circuit-{self.artifact_name or self.logger.experiment.name}",
                                  type="circuit", metadata={"step": circuits.step})
        for f in files:
            artifact.add_file(str(f))
        self.logger.experiment.log_artifact(artifact)

    def images(self, key: str, paths: list, step: int) -> None:
        if self._wandb:
            for path in paths:
                self.logger.log_image(f"{key}/{self.prefix}{path.stem}", images=[str(path)], step=step)
