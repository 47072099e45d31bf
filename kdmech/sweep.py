"""Capacity sweeps from W&B sweep YAML.

Online, W&B is the engine: the sweep is created on the server and this process runs `wandb
agent`; more agents on other machines join with `wandb agent ENTITY/PROJECT/SWEEP_ID`. Each
agent runs the sweep's `command` (`kdmech distill ${args}`) once per point, as its own process
and W&B run; `kdmech distill` reads the point the agent wrote (WANDB_SWEEP_PARAM_PATH) to name
its folder (`point_name`). Offline (the
default without a W&B key) a local runner expands the same YAML — `grid` and `random`;
`bayes` needs the server — and runs the points one after another with the same run semantics
as `kdmech distill`, recording finished points in `sweep.json` so an interrupted sweep resumes
where it stopped (an interrupted point continues from its last checkpoint).

Parameters are `kdmech distill` options in dotted form (`capacity.depth`, `training.seed`, …),
plus `teacher` and `out`. `teacher: {value: tiny}` trains (once) the tiny teacher into
`<out>/teacher`; an online `kdmech sweep` shares it with every agent as a W&B artifact.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from pathlib import Path

import yaml

from kdmech.errors import KdmechError
from kdmech.run_layout import RunLayout

SAMPLERS = {"grid", "random", "bayes"}


def load_sweep(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KdmechError(f"sweep file {str(path)!r} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise KdmechError(f"sweep file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("parameters"), dict):
        raise KdmechError(f"sweep file {str(path)!r} needs a 'parameters' mapping (W&B sweep format)")
    if config.get("method") not in SAMPLERS:
        raise KdmechError(f"sweep method {config.get('method')!r} is unknown; accepted: {sorted(SAMPLERS)}")
    config.setdefault("name", path.stem)
    return config


def _sample(spec: dict, rng: random.Random):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    dist = spec.get("distribution", "uniform")
    lo, hi = spec.get("min"), spec.get("max")
    if dist == "int_uniform":
        return rng.randint(lo, hi)
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    raise KdmechError(f"distribution {dist!r} is not supported offline; accepted: value, values, "
                      f"uniform, int_uniform, log_uniform_values")


def expand(config: dict, count: int | None = None, seed: int = 0) -> list[dict]:
    """The points of a sweep, in order: a grid's cartesian product (its first `count` points
    when `count` is given), or `count` random draws."""
    params = config["parameters"]
    method = config["method"]
    if method == "bayes":
        raise KdmechError("bayes search needs the W&B server: configure a W&B key and run online, "
                          "or use method grid or random")
    if method == "grid":
        keys = list(params)
        choices = []
        for k in keys:
            spec = params[k]
            if "value" in spec:
                choices.append([spec["value"]])
            elif "values" in spec:
                choices.append(list(spec["values"]))
            else:
                raise KdmechError(f"grid parameter {k!r} needs value or values, got {spec}")
        combos = itertools.islice(itertools.product(*choices), count or None)  # None: all of them
        return [dict(zip(keys, combo)) for combo in combos]
    n = count or config.get("run_cap")
    if not n:
        raise KdmechError("a random sweep needs a count (--count N or run_cap in the YAML)")
    rng = random.Random(seed)
    return [{k: _sample(spec, rng) for k, spec in params.items()} for _ in range(n)]


NOT_IN_NAME = ("teacher", "out", "name", "wandb", "progress", "resume", "group", "project", "entity", "tags")
"""Options that say where and how a point runs, not what it is: left out of its name."""


def point_name(point: dict) -> str:
    """A sweep point's folder and run name, the same offline and under a W&B agent: the
    capacity (`p<params>` for a capacity in parameters), the init when the point sets one, the
    seed, and a short hash of every other value the point sets (swept or fixed), e.g.
    `d0.5-w1-h0.5-s1-3fa9c2` or `d0.5-w1-h1-importance-s0`. Points that differ in any value get
    different names; seeds of one configuration share everything but their `-s<N>`, inits of one
    configuration everything but their init (kdmech.report.replicates)."""
    depth, width = point.get("capacity.depth", 0.5), point.get("capacity.width", 1.0)
    heads = point.get("capacity.heads", 1.0)
    name = (f"p{point['capacity.params']:g}" if point.get("capacity.params") is not None
            else f"d{depth:g}-w{width:g}-h{heads:g}")
    if "init" in point:
        name += f"-{point['init']}"
    name += f"-s{point.get('training.seed', 0)}"
    rest = {k: v for k, v in point.items() if k not in NOT_IN_NAME and k not in NAMED}
    if rest:
        name += "-" + hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:6]
    return name


NAMED = ("capacity.depth", "capacity.width", "capacity.heads", "capacity.params", "init", "training.seed")
"""Options a point's name spells out (the rest are hashed)."""


def agent_point() -> dict | None:
    """The point of this process when a W&B sweep agent started it: the agent writes the run's
    parameters to the YAML file named by WANDB_SWEEP_PARAM_PATH ({key: {value: ...}}) before
    it runs the sweep's `command`. None outside an agent."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return None
    params = yaml.safe_load(Path(path).read_text()) or {}
    return {k: v["value"] for k, v in params.items() if isinstance(v, dict) and "value" in v}


def agent_point_name() -> str | None:
    point = agent_point()
    return point_name(point) if point else None


def nested(point: dict) -> dict:
    """{"capacity.depth": 0.5} → {"capacity": {"depth": 0.5}} (what the distill parser reads)."""
    out: dict = {}
    for key, value in point.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class SweepState:
    """sweep.json: finished points and their results, rewritten atomically after each."""

    def __init__(self, out: Path, name: str, points: list[dict]):
        self.path = RunLayout(out).sweep_state
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.update({"name": name, "points": points})
        self.data.setdefault("done", {})

    def done(self, name: str) -> bool:
        return name in self.data["done"]

    def finish(self, name: str, result: dict) -> None:
        self.data["done"][name] = result
        self.data["students"] = list(self.data["done"].values())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
