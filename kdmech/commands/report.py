"""`kdmech report DIR`: the capacity-comparison report of a quickstart or sweep folder;
`kdmech report --sweep ENTITY/PROJECT/ID`: the same report of a W&B sweep's runs, from every
machine that ran an agent (read through W&B's public API)."""

from __future__ import annotations

from pathlib import Path

from kdmech.errors import KdmechError
from kdmech.report.html import write_report
from kdmech.report.wandb_report import log_report
from kdmech.tracking import WandbMode, resolve_mode
from kdmech.validation import check_out_dir, check_run_folder


def report(folder: Path | None = None, sweep: str | None = None, wandb: WandbMode = "auto",
           project: str | None = None, entity: str | None = None, tags: list[str] | None = None) -> Path:
    """Write the capacity report of a run or sweep folder and log it to W&B.

    DIR/report/report.html (self-contained, images embedded) and its PNGs; the capacity table,
    the events and the page go to a W&B `report` run.

    Args:
        folder: A folder written by `kdmech quickstart`, `distill` or `sweep`; with --sweep, where
            the sweep's records are downloaded (default runs/sweeps/<sweep id>).
        sweep: A W&B sweep, entity/project/sweep_id: build the report from its finished runs'
            analysis artifacts (needs W&B configured; the runs may come from any machine).
        wandb: W&B mode of the report run: auto (offline unless a key is configured), online,
            offline, disabled.
        project: W&B project (default: the sweep's with --sweep, else kdmech).
        entity: W&B entity (default: the sweep's with --sweep, else the account's default).
        tags: W&B tags of the report run.
    """
    resolve_mode(wandb)  # an unknown mode: refused before any work
    if sweep is not None:
        from kdmech.report.from_wandb import fetch_sweep

        if sweep.count("/") != 2:
            raise KdmechError(f"--sweep {sweep!r} is not entity/project/sweep_id")
        folder = Path(folder or Path("runs/sweeps") / sweep.split("/")[-1])
        check_out_dir(folder)
        names = fetch_sweep(sweep, folder)
        print(f"W&B sweep {sweep}: {len(names)} students downloaded into {folder}")
    if folder is None:
        raise KdmechError("report needs a run folder (kdmech report DIR) or a W&B sweep (--sweep entity/project/id)")
    check_run_folder(folder)
    path = write_report(folder)
    print(f"report written to {path} (open it in a browser; it needs no network)")
    s_entity, s_project, s_id = sweep.split("/") if sweep else (None, None, None)
    log_report(folder, s_id or Path(folder).resolve().name, wandb, project or s_project or "kdmech",
               entity or s_entity, tags)
    return path
