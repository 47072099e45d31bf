"""Shipped configs and function defaults agree: every key a file in configs/ sets has the value
`kdmech <command> --print_config` shows without it (the defaults), so a run with the config does
what a run without it does and `--print_config` never shows other numbers than a run uses.

A few defaults are None and resolved when the command runs (the quickstart's `out`, the tiny Llama's
`n_kv_head` and `model_type`, the tiny
teacher's `lr`, the BERT quickstart's task); there the config must hold the resolved value.
students/*.yaml are overlays that choose a capacity: each of their keys must be an option of
`distill` and land there unchanged."""

from pathlib import Path

import pytest
import yaml

from kdmech.cli import main
from kdmech.models.family import get_family, tiny_spec
from kdmech.models.tiny import TinySpec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FULL = sorted([*CONFIGS.glob("quickstart*.yaml"), *(CONFIGS / "distill").glob("*.yaml"),
               *(CONFIGS / "teacher").glob("*.yaml")])
OVERLAYS = sorted((CONFIGS / "students").glob("*.yaml"))
REQUIRED = {"distill": ["--teacher", "t", "--out", "o"], "train-teacher": ["--out", "o"], "quickstart": []}


def command_of(path: Path) -> str:
    if path.name.startswith("quickstart"):
        return "quickstart"
    return {"distill": "distill", "students": "distill", "teacher": "train-teacher"}[path.parent.name]


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def print_config(capsys, command: str, *args: str) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([command, *REQUIRED[command], *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return flatten(yaml.safe_load(capsys.readouterr().out))


def resolved(command: str, key: str, default, family: str, defaults: dict):
    """The value a run uses where the function default is resolved at run time."""
    fam = get_family(family)
    if key in ("tiny.n_kv_head", "tiny.model_type") and default is None and family == "llama":
        spec = tiny_spec(family, TinySpec(**{k.split(".", 1)[1]: v for k, v in defaults.items()
                                             if k.startswith("tiny.")}))
        return spec.kv_heads if key == "tiny.n_kv_head" else spec.model_type or "llama"
    if command == "quickstart" and key == "out" and default is None:
        return "runs/quickstart" if family == "gpt2" else f"runs/quickstart-{family}"
    if key in ("teacher_training.lr", "training.lr") and command != "distill" and default is None:
        return fam.tiny_teacher_lr
    if command == "quickstart" and key == "analysis.task" and default == "numerals":
        return fam.tiny_task
    return default


def test_every_config_is_covered():
    assert {p.relative_to(CONFIGS) for p in [*FULL, *OVERLAYS]} == set(
        p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.yaml"))
    assert len(FULL) >= 5 and len(OVERLAYS) >= 3


@pytest.mark.parametrize("path", FULL, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_equals_the_defaults(capsys, path):
    shipped = flatten(yaml.safe_load(path.read_text()))
    command = command_of(path)
    family = shipped.get("family", "gpt2")  # the config's family selects the defaults it states
    defaults = print_config(capsys, command, *(["--family", family] if "family" in shipped else []))
    missing = sorted(set(shipped) - set(defaults))
    assert not missing, f"{path.name}: keys that are no option of {command}: {missing}"
    differ = {k: (v, resolved(command, k, defaults[k], family, defaults)) for k, v in shipped.items()
              if v != resolved(command, k, defaults[k], family, defaults)}
    assert not differ, f"{path.name} differs from `kdmech {command}`'s defaults (config, default): {differ}"


@pytest.mark.parametrize("path", OVERLAYS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_student_overlay_keys_are_distill_options(capsys, path):
    shipped = flatten(yaml.safe_load(path.read_text()))
    defaults = print_config(capsys, "distill")
    assert set(shipped) <= set(defaults), sorted(set(shipped) - set(defaults))
    with_overlay = print_config(capsys, "distill", "--config", str(path))
    assert {k: with_overlay[k] for k in shipped} == shipped
    # on top of the distill config, as the README runs them
    both = print_config(capsys, "distill", "--config", str(CONFIGS / "distill" / "default.yaml"),
                        "--config", str(path))
    assert {k: both[k] for k in shipped} == shipped
