"""Cheap checks of a command's input, run before any model is loaded or anything is written:
a bad value is refused in a second with one line (a `KdmechError` naming the value and what is
accepted), not after minutes of loading and training, and never with a half-written `--out`."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

from kdmech.errors import KdmechError

def _probe_write(folder: Path) -> None:
    """Write and remove a one-byte file in `folder` (os.access alone is not enough: root
    ignores permission bits, and a full disk only shows when a byte is written)."""
    fd, name = tempfile.mkstemp(prefix=".kdmech-probe-", dir=folder)
    try:
        os.write(fd, b"k")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_dir(path: str | Path, what: str = "--out", replaced: bool = False) -> Path:
    """Refuse an output folder that is an existing file (or lies under one), or whose nearest
    existing folder cannot be written (permissions, read-only or full file system).
    `replaced`: the command swaps the whole folder into place (atomic_dir), so the folder
    holding it must be writable too."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KdmechError(f"{what} {str(path)!r} is an existing file, not a folder; pass a folder path")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise KdmechError(f"{what} {str(path)!r} lies under {str(base)!r}, which is a file, not a folder")
    targets = [base]
    if replaced and path.exists():
        targets.append(_nearest_existing(path.parent))
    for folder in targets:
        try:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            _probe_write(folder)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise KdmechError(f"{what} {str(path)!r} cannot be written: {str(folder)!r}: {reason}; "
                              f"pass a writable folder") from None
    return path


def check_task(name: str, kind: str | None = None) -> None:
    """An unknown task, or one without a cloze form for a masked LM (`kind` "masked")."""
    from kdmech.tasks import CLOZE_TASKS, TASKS
    from kdmech.tasks.forms import prompt_form

    if name not in TASKS:
        raise KdmechError(f"task {name!r} is unknown; accepted: {sorted(TASKS)}")
    if kind is not None and prompt_form(kind).cloze and name not in CLOZE_TASKS:
        raise KdmechError(f"task {name!r} has no cloze ([MASK]) form for masked-LM (BERT) "
                          f"models; accepted: {list(CLOZE_TASKS)}")


def _check_safetensors(path: Path, folder: str) -> None:
    """The header of a .safetensors file parses and the data it announces is all there (a
    copy cut off half-way is found here, not in a 30-line traceback from the loader)."""
    size = path.stat().st_size
    bad = f"model folder {folder!r}: {path.name} is truncated or not a safetensors file"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise KdmechError(f"{bad} ({size} bytes); copy it again or save the model anew")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise KdmechError(f"{bad} (header of {n} bytes in a {size}-byte file); copy it again or "
                              f"save the model anew")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError):
            raise KdmechError(f"{bad} (its header is not JSON); copy it again or save the model anew") from None
    ends = [t["data_offsets"][1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t] \
        if isinstance(header, dict) else None
    if ends is None or 8 + n + max(ends, default=0) > size:
        raise KdmechError(f"{bad} ({size} bytes, fewer than its header announces); copy it again or "
                          f"save the model anew")


def check_model(name_or_path: str | Path, role: str = "model") -> str | None:
    """A local model folder that cannot load, refused before loading: no config.json, a config
    that is not JSON, weights that are missing or truncated. Returns the model's kind
    ("masked" or "causal") of its family, None for hub names (the loader checks those the same
    way); a model type no family accepts is refused here."""
    path = Path(name_or_path)
    if not path.exists():
        return None  # a hub name, or a typo the loader reports
    where = str(name_or_path)
    if not path.is_dir():
        raise KdmechError(f"{role} {where!r} is a file; pass a folder written by save_pretrained "
                          f"or a hub name such as 'gpt2'")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise KdmechError(f"{role} folder {where!r} has no config.json; expected a folder written "
                          f"by save_pretrained or a hub name such as 'gpt2'")
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise KdmechError(f"{role} folder {where!r}: config.json is not valid JSON ({e}); save the "
                          f"model anew") from None
    if not isinstance(config, dict):
        raise KdmechError(f"{role} folder {where!r}: config.json is not a JSON object; save the model anew")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise KdmechError(f"{role} folder {where!r}: model.safetensors.index.json is not a "
                              f"valid shard index; save the model anew") from None
        for shard in shards:
            if not (path / shard).is_file():
                raise KdmechError(f"{role} folder {where!r} lacks the weight shard {shard!r}; "
                                  f"copy it again or save the model anew")
            _check_safetensors(path / shard, where)
    elif (path / "model.safetensors").is_file():
        _check_safetensors(path / "model.safetensors", where)
    elif not any((path / f).is_file() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise KdmechError(f"{role} folder {where!r} has no weights (model.safetensors or "
                          f"pytorch_model.bin); copy them or save the model anew")
    from kdmech.models.family import model_types

    model_type = config.get("model_type")
    for kind in ("causal", "masked"):
        if model_type in model_types(kind):
            return kind
    raise KdmechError(f"{role} {where!r} is a {model_type!r}; teachers and students must be one "
                      f"of {sorted(model_types())}")


def check_training(training) -> None:
    """Step counts and sizes of a DistillTraining (or any object with those fields)."""
    for field in ("steps", "batch_size", "n_train"):
        value = getattr(training, field, 1)
        if not isinstance(value, int) or value < 1:
            raise KdmechError(f"training.{field} must be an integer ≥ 1, got {value!r}")
    warmup = getattr(training, "warmup_steps", 0)
    if warmup < 0:
        raise KdmechError(f"training.warmup_steps must be ≥ 0, got {warmup!r}")
    lr = getattr(training, "lr", None)
    if lr is not None and not lr > 0:
        raise KdmechError(f"training.lr must be > 0, got {lr!r}")


def check_sweep_parameters(config: dict, source: str = "sweep file") -> None:
    """Each parameter of a W&B sweep is a mapping with a value, values or a distribution."""
    for key, spec in config["parameters"].items():
        if not isinstance(spec, dict):
            raise KdmechError(f"{source}: parameter {key!r} is {spec!r}; write it as "
                              f"{{value: ...}}, {{values: [...]}} or a distribution with min/max")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            raise KdmechError(f"{source}: parameter {key!r} needs a non-empty list of values, got "
                              f"{spec['values']!r}")
        if not ({"value", "values", "min", "max", "distribution"} & set(spec)):
            raise KdmechError(f"{source}: parameter {key!r} has none of value, values, "
                              f"distribution/min/max: {spec!r}")


def check_run_folder(folder: str | Path) -> None:
    """A folder `report`/`timeline` can read: it exists, has analysed students, and every
    step_<N>.json / circuit_step_<N>.json is a kdmech record (a foreign or damaged file is
    named, not met with a KeyError from deep inside)."""
    from kdmech.analysis.record import CircuitRecord, PairAnalysis
    from kdmech.run_layout import _STEP, RunLayout

    folder = Path(folder)
    if not folder.exists():
        raise KdmechError(f"{str(folder)!r} does not exist; pass the folder a quickstart, distill or "
                          f"sweep wrote")
    if not folder.is_dir():
        raise KdmechError(f"{str(folder)!r} is a file; pass the folder a quickstart, distill or sweep wrote")
    layout = RunLayout(folder)
    students = layout.analysed_students()
    if not students:
        raise KdmechError(f"{str(folder)!r} is not a kdmech run folder (no analysis/<student>/"
                          f"step_<N>.json inside); pass the folder a quickstart, distill or sweep wrote")
    for name in students:
        for pattern, reader in (("step_*.json", PairAnalysis.from_json),
                                ("circuit_step_*.json", CircuitRecord.from_json)):
            for path in sorted(layout.analysis(name).glob(pattern)):
                if not _STEP.match(path.name):
                    raise KdmechError(f"{str(path)!r} is not named step_<N>.json or circuit_step_<N>.json; "
                                      f"remove it or pass another folder")
                try:
                    reader(json.loads(path.read_text()))
                except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                    raise KdmechError(f"{str(path)!r} is not a kdmech checkpoint record "
                                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                      f"remove it or pass another folder") from None


def check_distill(teacher: str, out, training=None, analysis=None, **_) -> None:
    """`kdmech distill` / `distill-shared`: the teacher folder, the task for its kind, the
    run folder and the step counts, before the teacher is loaded."""
    kind = check_model(teacher, "teacher")
    if analysis is not None and getattr(analysis, "enabled", True):
        check_task(analysis.task, kind)
    if training is not None:
        check_training(training)
    check_out_dir(out)
