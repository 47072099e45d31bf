"""A frozen teacher's side of the checkpoint analysis, kept on disk between runs.

Every `kdmech distill` of one teacher (a capacity sweep, its seeds, the next day's run) needs
the same teacher numbers: its influence, attention patterns, MLP outputs, the preset's LDs and
its circuit and probes. They depend only on the teacher's weights, the prompts, the ablation,
the preset, the memory budget and the analysis code, so the first run stores them under a key
made of exactly those (a hash of every weight and prompt tensor, of kdmech's analysis, model
and task sources, and the torch version) and later runs read them instead of recomputing:
the same numbers, bit for bit (tests/test_teacher_cache.py).

Where: `$KDMECH_CACHE` when set (`off` turns the cache off), else `$XDG_CACHE_HOME/kdmech` or
`~/.cache/kdmech`, subfolder `teacher-sides`. A file that cannot be read is ignored and
rewritten; a folder that cannot be written leaves the run uncached (one warning line). Entries
are plain files, safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from kdmech.analysis.circuit import Circuit
from kdmech.analysis.influence import Influence
from kdmech.tasks.prompt_set import PromptSet

FORMAT = 2
"""Bumped when the payload's layout changes."""
_SOURCES = ("analysis", "models", "tasks")
"""kdmech's subpackages whose code decides the teacher's numbers."""


def cache_dir() -> Path | None:
    """The folder of cached teacher sides, None when the cache is off."""
    env = os.environ.get("KDMECH_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "false", "none"):
        return None
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdmech"
    return root / "teacher-sides"


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """A hash of the analysis, model and task sources (a changed method invalidates)."""
    h = hashlib.blake2b(digest_size=12)
    pkg = Path(__file__).resolve().parent.parent
    for sub in _SOURCES:
        for path in sorted((pkg / sub).rglob("*.py")):
            h.update(str(path.relative_to(pkg)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(weights_fingerprint: str, prompts: PromptSet, options, device) -> str:
    """What the teacher's numbers depend on, hashed: weights and prompts (`weights_fingerprint`,
    `kdmech.analysis.checkpoint._fingerprint`), the task, ablation, preset and memory budget,
    the analysis code, torch, the device type and the CPU thread count (float reductions
    differ in the last bits between them)."""
    parts = (FORMAT, weights_fingerprint, prompts.task, options.ablation, options.preset,
             getattr(options, "authors_sampling", False), getattr(options, "sender_source", "intact"),
             getattr(options, "max_batch_tokens", 0), _code_hash(), torch.__version__,
             torch.device(device).type, torch.get_num_threads(), getattr(options, "discovery", "exact"),
             getattr(options, "ig_steps", 5), getattr(options, "attribution_dtype", "float32"))
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _lds_payload(lds):
    return None if lds is None else [lds[0], list(lds[1]), lds[2].cpu(), lds[3].cpu()]


def _lds(payload, device):
    return (None if payload is None else
            (payload[0], list(payload[1]), payload[2].to(device), payload[3].to(device)))


def _side_payload(profile, side):
    """What A reads of the teacher (`presets.alignment_side`): its LDs, and its patterns and MLP
    outputs where they are not the profile's (the authors' sampling)."""
    if side is None:
        return None
    own = side.patterns is profile.patterns
    return {"lds": _lds_payload(side.lds), "patterns": None if own else side.patterns.cpu(),
            "mlp_out": None if own else side.mlp_out.cpu()}


def _side(prof, payload, device):
    from dataclasses import replace

    from kdmech.analysis.influence import influence_from_lds

    if payload is None:
        return None
    lds = _lds(payload["lds"], device)
    side = replace(prof, influence=influence_from_lds(*lds), lds=lds)
    if payload["patterns"] is not None:
        side = replace(side, patterns=payload["patterns"].to(device), mlp_out=payload["mlp_out"].to(device))
    return side


def to_payload(profile, alignment_side, circuits: dict) -> dict:
    """What a teacher side keeps, in plain types and tensors (loadable with weights_only)."""
    inf = profile.influence
    return {"format": FORMAT,
            "influence": {"ablation": inf.ablation, "metric": inf.metric,
                          "retained": dict(inf.retained), "influence": dict(inf.influence)},
            "patterns": profile.patterns.cpu(), "mlp_out": profile.mlp_out.cpu(),
            "nodes": [n.name for n in profile.nodes], "lds": _lds_payload(profile.lds),
            "alignment": _side_payload(profile, alignment_side),
            "circuits": {repr(float(t)): {"circuit": c.to_json(), "probes": probes}
                         for t, (c, probes) in circuits.items()}}


def from_payload(payload: dict, device):
    """(ModelProfile without an engine, its alignment side or None, {threshold: (Circuit,
    probes)}), the tensors on `device` (the teacher's)."""
    from kdmech.analysis.nodes import Node
    from kdmech.analysis.profile import ModelProfile

    inf = payload["influence"]
    prof = ModelProfile(Influence(inf["ablation"], inf["metric"], inf["retained"], inf["influence"]),
                        payload["patterns"].to(device), payload["mlp_out"].to(device),
                        [Node.parse(n) for n in payload["nodes"]], None, _lds(payload["lds"], device))
    circuits = {float(t): (Circuit.from_json(c["circuit"]), c["probes"])
                for t, c in payload["circuits"].items()}
    return prof, _side(prof, payload["alignment"], device), circuits


def load(key: str) -> dict | None:
    folder = cache_dir()
    path = folder / f"{key}.pt" if folder else None
    if path is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file (any error): recompute and rewrite it
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


def store(key: str, payload: dict) -> None:
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        torch.save(payload, tmp)
        tmp.replace(folder / f"{key}.pt")
    except OSError as e:
        warnings.warn(f"kdmech: the teacher-side cache {folder} cannot be written ({e}); "
                      f"set KDMECH_CACHE to a writable folder or to off", stacklevel=2)
