"""`kdmech workspace ENTITY/PROJECT [--sweep ID]`: save a W&B workspace for watching
restructuring (kdmech.report.workspace builds it)."""

from __future__ import annotations

from kdmech.errors import KdmechError
from kdmech.report.workspace import build_workspace
from kdmech.tracking import WandbMode, resolve_mode


def workspace(project: str, sweep: str | None = None, group: str | None = None, name: str | None = None,
              wandb: WandbMode = "auto") -> str | None:
    """Save a W&B workspace for watching a project's kdmech runs restructure.

    A over steps by capacity, per-node influence, circuit size and membership, worst drop,
    final A against the parameter ratio,
    the restructuring pictures with a step slider, the events and matching tables, and the runs
    table with the final/* columns. Prints its URL; offline, says that nothing was saved.

    Args:
        project: The W&B project, as entity/project.
        sweep: Show only this W&B sweep's runs (its id).
        group: Show only this group's runs (a quickstart's or sweep's folder name).
        name: The workspace's name (default: "kdmech: restructuring" and the sweep or group).
        wandb: W&B mode: auto (online when a key is configured), online, offline, disabled.
    """
    parts = project.split("/")
    if len(parts) != 2 or not all(parts):
        raise KdmechError(f"workspace needs ENTITY/PROJECT, got {project!r}")
    built = build_workspace(*parts, sweep=sweep, group=group, name=name)
    mode = resolve_mode(wandb)
    if mode != "online":
        print(f"W&B is {mode}: the workspace was built but not saved (it lives on the W&B server; "
              f"run `wandb login`, then this command again)")
        return None
    try:
        url = built.save().url
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmechError(f"the workspace of {project} could not be saved ({first})") from None
    print(f"W&B workspace saved: {url}")
    return url
