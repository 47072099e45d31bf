"""Every YAML in configs/ loads through the parser of the command it is for."""

from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from kdmech.commands.distill import distill
from kdmech.commands.quickstart import quickstart
from kdmech.teacher import train_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMAND = {"teacher": train_teacher, "students": distill, "distill": distill}


def parser_for(func):
    p = ArgumentParser(exit_on_error=False)
    p.add_argument("--config", action="config")
    p.add_function_arguments(func)
    return p


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads(path):
    func = quickstart if path.name.startswith("quickstart") else COMMAND[path.parent.name]
    required = {"train_teacher": ["--out", "x"], "distill": ["--teacher", "t", "--out", "x"]}
    cfg = parser_for(func).parse_args(["--config", str(path), *required.get(func.__name__, [])])
    init = parser_for(func).instantiate_classes(cfg)  # builds the dataclasses, runs validation
    assert init is not None


def test_all_configs_are_covered():
    assert len(list(CONFIGS.rglob("*.yaml"))) >= 6
