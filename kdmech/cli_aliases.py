"""What users type before they know kdmech's option names, rewritten before parsing: Lightning's
Trainer names (`--trainer.devices`, `--trainer.max_steps`, ...) where kdmech has the option under
another name, and `--data PATH` (a corpus file or folder) for `--data.files [PATH]`. A Lightning
name kdmech has no counterpart for is refused in one line naming what to use."""

from __future__ import annotations

import json
from pathlib import Path

from kdmech.errors import KdmechError

LIGHTNING = {"--trainer.devices": "--devices", "--trainer.accelerator": "--accelerator",
             "--trainer.strategy": "--strategy", "--trainer.num_nodes": "--num_nodes",
             "--trainer.max_steps": "--training.steps", "--trainer.enable_progress_bar": "--progress",
             "--trainer.default_root_dir": "--out"}
"""Lightning's Trainer options and kdmech's own (distill, distill-shared)."""
REFUSED = {"--trainer.max_epochs": "kdmech counts optimizer steps: use --training.steps",
           "--trainer.min_steps": "kdmech trains exactly --training.steps optimizer steps",
           "--trainer.limit_train_batches": "kdmech counts optimizer steps: use --training.steps",
           "--trainer.log_every_n_steps": "kdmech logs its analyses every --analysis.every_n_steps steps",
           "--trainer.check_val_every_n_epoch": "use --trainer.val_check_interval (optimizer steps)"}
TRAINER_COMMANDS = ("distill", "distill-shared")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".jsonnet")


def _split(arg: str) -> tuple[str, str | None]:
    name, eq, value = arg.partition("=")
    return (name, value) if eq else (arg, None)


def lightning_names(argv: list[str]) -> list[str]:
    """`--trainer.devices 2` → `--devices 2` (and the other LIGHTNING names) for the training
    commands; a Lightning option kdmech does not have the like of: one-line KdmechError."""
    if not argv or argv[0] not in TRAINER_COMMANDS:
        return argv
    out = []
    for arg in argv:
        name, value = _split(arg)
        if name in REFUSED:
            raise KdmechError(f"{name} is a Lightning Trainer option kdmech does not take; {REFUSED[name]}")
        if name in LIGHTNING:
            name = LIGHTNING[name]
            arg = name if value is None else f"{name}={value}"
        out.append(arg)
    return out


def data_path(argv: list[str]) -> list[str]:
    """`--data corpus.txt` (a file or folder of text, not a YAML config) → `--data.files [corpus.txt]`;
    a folder stands for every file in it."""
    out, i = [], 0
    while i < len(argv):
        name, value = _split(argv[i])
        step = 1
        if name == "--data" and value is None and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        if name == "--data" and value is not None and _is_corpus(value):
            files = [str(p) for p in sorted(Path(value).iterdir()) if p.is_file()] if Path(value).is_dir() else [value]
            out += ["--data.files", json.dumps(files)]
        else:
            out += argv[i:i + step]
        i += step
    return out


def _is_corpus(value: str) -> bool:
    path = Path(value)
    return path.is_dir() or (path.is_file() and path.suffix.lower() not in CONFIG_SUFFIXES)
