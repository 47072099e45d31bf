"""Reading offline W&B runs back from disk: which `offline-run-*` folders hold a run, and the
history rows its transaction log holds (what `wandb sync` would upload). Used by resumed
offline runs (`kdmech.tracking`) and by tests that check a run's history."""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

_MAGIC, _BLOCK, _CHUNK_HEADER = b":W&B", 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_W_AND_B_KEYS = ("_step", "_runtime", "_timestamp")


def offline_folders(save_dir: str | Path, run_id: str) -> list[Path]:
    """The `offline-run-*` folders of run `run_id` under `save_dir`/wandb, oldest first."""
    def started(folder: Path):
        m = re.match(rf"offline-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?$", folder.name)
        return (m.group(1), int(m.group(2) or 0)) if m else (folder.name, 0)

    found = [f for f in (Path(save_dir) / "wandb").glob("offline-run-*") if (f / f"run-{run_id}.wandb").exists()]
    return sorted(found, key=started)


def wandb_records(path: str | Path) -> Iterator:
    """The records (`wandb_internal_pb2.Record`) of a W&B transaction log, `run-<id>.wandb`.

    The format is LevelDB's log (what wandb-core writes; this wandb has no Python reader): a
    7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each a 7-byte header
    (CRC-32 of type byte + data, length, type: full/first/middle/last) and its data. Reading
    stops at the first chunk that is cut off or fails its checksum (a run killed mid-write)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != _MAGIC:
        return
    offset, pending = _CHUNK_HEADER, b""
    while True:
        if _BLOCK - offset % _BLOCK < _CHUNK_HEADER:  # a block's tail too short for a header
            offset += _BLOCK - offset % _BLOCK
        if offset + _CHUNK_HEADER > len(data):
            return
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        chunk = data[offset + _CHUNK_HEADER: offset + _CHUNK_HEADER + length]
        if kind not in (_FULL, _FIRST, _MIDDLE, _LAST) or len(chunk) < length \
                or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        offset += _CHUNK_HEADER + length
        if kind in (_FIRST, _FULL):
            pending = b""
        pending += chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _history_row(record) -> dict:
    """A history record as the dict that was logged (nested keys rejoined, values decoded),
    without W&B's own _step, _runtime and _timestamp."""
    row: dict = {}
    for item in record.history.item:
        path = list(item.nested_key) or [item.key]
        if path[0] in _W_AND_B_KEYS:
            continue
        at = row
        for part in path[:-1]:
            at = at.setdefault(part, {})
        at[path[-1]] = json.loads(item.value_json)
    return row


def wait_for_offline_run(folder: str | Path, timeout: float = 60.0) -> bool:
    """Wait until a finished offline run's log holds its exit record: wandb.finish() can return
    before wandb-core has written the log to disk. False if it does not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        logs = list(Path(folder).glob("run-*.wandb"))
        if logs and any(r.WhichOneof("record_type") == "exit" for r in wandb_records(logs[0])):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def offline_history(folder: str | Path) -> list[dict]:
    """Every history row an offline run folder holds, in the order logged (read back from its
    .wandb file: what `wandb sync` uploads)."""
    (log,) = Path(folder).glob("run-*.wandb")
    return [_history_row(r) for r in wandb_records(log) if r.WhichOneof("record_type") == "history"]


def _merge_items(items, into: dict) -> dict:
    for item in items:
        path = list(item.nested_key) or [item.key]
        at = into
        for part in path[:-1]:
            at = at.setdefault(part, {})
        at[path[-1]] = json.loads(item.value_json)
    return into


def _merged(folder: str | Path, updates) -> dict:
    """Every update `updates(record)` yields (or None) of an offline run's log, merged in order."""
    (log,) = Path(folder).glob("run-*.wandb")
    merged: dict = {}
    for record in wandb_records(log):
        items = updates(record)
        if items is not None:
            _merge_items(items, merged)
    return merged


def offline_config(folder: str | Path) -> dict:
    """The W&B config an offline run holds (its run and config records merged, as the server would)."""
    kinds = {"config": lambda r: r.config.update, "run": lambda r: r.run.config.update}
    config = _merged(folder, lambda r: kinds.get(r.WhichOneof("record_type"), lambda _: None)(r))
    return {k: (v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v)
            for k, v in config.items() if k != "_wandb"}


def offline_summary(folder: str | Path) -> dict:
    """The run.summary an offline run holds (its summary records merged in order)."""
    return _merged(folder, lambda r: r.summary.update if r.WhichOneof("record_type") == "summary" else None)
