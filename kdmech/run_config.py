"""What a run was: its resolved options (what the command received, defaults filled in) and the
code that ran it (kdmech's version, the git commit of its source). Both go into the W&B run's
config and into `config.yaml` in the run's folder — a file `kdmech <command> --config` reads
back to repeat the run (the provenance stands in its header comment)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from functools import lru_cache
from pathlib import Path

import yaml

import kdmech


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit kdmech's source is checked out at (`-dirty` when it has uncommitted changes);
    None for an installed copy outside a git work tree, or without git."""
    root = Path(kdmech.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def provenance(command: str) -> dict:
    return {"command": command, "version": kdmech.__version__, "git_commit": git_commit()}


def plain(value):
    """Options as YAML/JSON-ready values: dataclasses to dicts, paths to strings, tuples to lists."""
    return json.loads(json.dumps(value, default=_plain_default))


def _plain_default(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def resolved(command: str, options: dict) -> dict:
    """The W&B config of a run: every option (plain values) and, under `kdmech`, its provenance."""
    return {**{k: plain(v) for k, v in options.items()}, "kdmech": provenance(command)}


def write_config_yaml(path: Path, config: dict) -> Path:
    """`config.yaml`: the options of `config` (without its `kdmech` provenance, which becomes the
    header comment), written atomically."""
    options = {k: v for k, v in config.items() if k != "kdmech"}
    prov = config.get("kdmech", {})
    header = (f"# kdmech {prov.get('command', '')} --config {path.name}: repeats this run\n"
              f"# kdmech {prov.get('version')}, git commit {prov.get('git_commit') or 'unknown'}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(options, sort_keys=False))
    tmp.replace(path)
    return path
