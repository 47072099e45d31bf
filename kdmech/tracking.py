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
