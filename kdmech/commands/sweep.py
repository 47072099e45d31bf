"""`kdmech sweep sweeps/NAME.yaml`: run a capacity sweep (see kdmech.sweep)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import yaml
from jsonargparse import ArgumentError, ArgumentParser

from kdmech.analysis.matching import resolve_mlp_method
from kdmech.analysis.options import AnalysisSchedule, pair_analysis_plan
from kdmech.commands.analyze import analyze
from kdmech.distill.trainer import resume_point
from kdmech.teacher import ARTIFACT, TINY, resolve_teacher
from kdmech.commands.distill import distill
from kdmech.commands.timeline import timeline
from kdmech.errors import KdmechError
from kdmech.report.html import write_report
from kdmech.report.wandb_report import log_report
from kdmech.run_layout import RunLayout
from kdmech.sweep import SweepState, expand, load_sweep, nested, point_name
from kdmech.tracking import WandbMode, finish, resolve_mode
from kdmech.validation import check_model, check_out_dir, check_sweep_parameters, check_task, check_training

FIXED = ("teacher", "out", "name", "resume", "wandb", "progress", "group", "project", "entity", "tags")


def _distill_kwargs(point: dict) -> dict:
    """Validate a point's options with the same parser as `kdmech distill`."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(distill, skip=set(FIXED))
    try:
        cfg = parser.parse_object(nested(point))
    except ArgumentError as e:
        raise KdmechError(f"sweep point {point}: {' '.join(str(e).split())}") from None
    init = parser.instantiate_classes(cfg)
    return {k: init[k] for k in cfg.keys() if "." not in k} | {
        k.split(".")[0]: init[k.split(".")[0]] for k in cfg.keys() if "." in k}


def _mlp_method(config: dict, points: list[dict] | None) -> str:
    """The one MLP similarity for every student of the sweep (docs/method.md §7.2): the sweep's
    `analysis.mlp_similarity` (auto unless set to one value) resolved for the widths it visits —
    every point's when the points are known (grid, offline random), else the listed values of
    `capacity.width`; a width drawn from a distribution (online random/bayes) or picked from a
    `capacity.params` means cka."""
    params = config["parameters"]
    method = params.get("analysis.mlp_similarity", {}).get("value", "auto")
    if points and any(p.get("capacity.params") is not None for p in points):
        widths = None  # a capacity in parameters picks its width when the teacher is loaded
    elif points:
        widths = [p.get("capacity.width", 1.0) for p in points]
    else:
        spec = params.get("capacity.width", {"value": 1.0})
        widths = [spec["value"]] if "value" in spec else spec.get("values")  # None: a distribution
    return resolve_mlp_method(method, widths)


def _point_kwargs(point: dict, mlp_method: str) -> dict:
    """distill's options for a point, an `auto` MLP similarity replaced by the sweep's method."""
    kwargs = _distill_kwargs(point)
    analysis = kwargs.get("analysis", AnalysisSchedule())
    if analysis.mlp_similarity == "auto":
        kwargs["analysis"] = replace(analysis, mlp_similarity=mlp_method)
    return kwargs


def sweep(config_file: Path, out: Path | None = None, count: int | None = None,
          wandb: WandbMode = "auto", pair_analyses: bool = True, project: str = "kdmech",
          entity: str | None = None, tags: list[str] | None = None, progress: bool = True) -> dict:
    """Run a W&B-format capacity sweep (online: a W&B sweep; offline: point by point here).

    Online, a W&B sweep and an agent (`wandb agent`, whose runs are ordinary `kdmech distill`
    processes); offline, point by point in this process. Interrupted, the same command again
    continues: finished points are skipped, the interrupted one resumes from its checkpoint.

    Args:
        config_file: Sweep YAML in W&B's format (method, parameters, command).
        out: Sweep folder (default: the file's `out` value, else runs/sweeps/<sweep name>).
        count: Points to run (random sweeps; for grids, at most this many).
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        pair_analyses: After the points, run sensitivity, noise and shift per student for the report.
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of every run of the sweep.
        progress: Show progress bars.
    """
    config = load_sweep(config_file)
    check_sweep_parameters(config, f"sweep file {str(config_file)!r}")
    mode = resolve_mode(wandb)
    params = config["parameters"]
    out = Path(out or params.get("out", {}).get("value") or Path("runs/sweeps") / config["name"])
    teacher_spec = params.get("teacher", {}).get("value")
    if not teacher_spec:
        raise KdmechError("a sweep needs `teacher: {value: ...}` (a model name, a folder, a W&B artifact, or tiny)")
    check_out_dir(out)
    # a W&B artifact is downloaded (once) here to learn its family; agents get the reference
    local = resolve_teacher(teacher_spec, out, mode, progress) if teacher_spec.startswith(ARTIFACT) else teacher_spec
    kind = "causal" if local == TINY else check_model(local, "teacher")
    points = None if mode == "online" else expand(config, count)
    for p in points or []:  # validate every point before any work
        kwargs = _distill_kwargs(_options(p))
        if "training" in kwargs:
            check_training(kwargs["training"])
        if "analysis" in kwargs:
            check_task(kwargs["analysis"].task, kind)
    mlp_method = _mlp_method(config, points)
    out.mkdir(parents=True, exist_ok=True)
    teacher = resolve_teacher(local, out, mode, progress)
    if mode == "online":
        _online(config, teacher_spec, teacher, out, count, project, entity, tags, mlp_method)
    else:
        _local(config, points, teacher, out, mode, progress, mlp_method, project, entity, tags)
    state = SweepState(out, config["name"], points or [])
    layout = RunLayout(out)
    finished = [n for n in layout.analysed_students() if layout.student(n).is_dir()]
    if pair_analyses:
        for name in finished:
            if not layout.pair_analysis_json(name).exists():
                print(f"== pair analysis of {name}")
                plan = pair_analysis_plan(_run_schedule(layout, name, mlp_method))
                analyze(teacher, str(layout.student(name)), layout.pair_analysis(name), plan.task,
                        analyses=["sensitivity", "noise", "shift"], analysis=plan.options, progress=progress,
                        wandb="disabled")
    timeline(out)
    path = write_report(out)
    log_report(out, config["name"], mode, project, entity, tags)
    print(f"sweep {config['name']}: {len(finished)} students in {out}; report {path}")
    return state.data


def _run_schedule(layout: RunLayout, name: str, mlp_method: str) -> AnalysisSchedule:
    """The checkpoint-analysis options a point's run recorded (checkpoints/<name>/config.yaml);
    a run without that file (made elsewhere) gets the defaults and the sweep's MLP similarity."""
    path = layout.run_config(name)
    recorded = (yaml.safe_load(path.read_text()) or {}).get("analysis") if path.exists() else None
    if not recorded:
        return AnalysisSchedule(mlp_similarity=mlp_method)
    known = {f.name for f in fields(AnalysisSchedule)}
    return AnalysisSchedule(**{k: v for k, v in recorded.items() if k in known})


def _options(point: dict) -> dict:
    """A point's `kdmech distill` options (teacher and out are the sweep's)."""
    return {k: v for k, v in point.items() if k not in ("teacher", "out")}


def _local(config, points, teacher, out, mode, progress, mlp_method, project, entity, tags) -> None:
    state = SweepState(out, config["name"], points)
    for i, point in enumerate(points, 1):
        name = point_name(point)
        if state.done(name):
            print(f"== point {i}/{len(points)} {name}: done already, skipped")
            continue
        at = resume_point(RunLayout(out).checkpoints(name))
        print(f"== point {i}/{len(points)} {name}" + (" (resuming from its checkpoint)" if at else ""))
        kwargs = _point_kwargs(_options(point), mlp_method)
        result = distill(teacher, out, name=name, resume=at is not None, wandb=mode, progress=progress,
                         group=config["name"], project=project, entity=entity, tags=tags, **kwargs)
        state.finish(name, asdict(result) | {"point": point,
                                             "mlp_similarity": kwargs["analysis"].mlp_similarity})


AGENT_COMMAND = ["${env}", "kdmech", "distill", "${args}"]
"""What a W&B agent runs for each point when the sweep file names no `command`."""


def online_config(config: dict, teacher: str, out: Path, mlp_method: str, tags: list[str] | None) -> dict:
    """The sweep as W&B receives it: every agent, on any machine, runs `kdmech distill` with the
    shared teacher (a hub name, a path every machine reaches, or a W&B artifact), the sweep's
    folder (relative paths: below the agent's working folder), one MLP similarity for every
    width, and the tags."""
    cfg = json.loads(json.dumps(config))
    cfg["parameters"]["teacher"] = {"value": teacher}
    cfg["parameters"]["out"] = {"value": str(out)}
    mlp = cfg["parameters"].setdefault("analysis.mlp_similarity", {"value": mlp_method})
    if mlp.get("value") == "auto":
        mlp["value"] = mlp_method
    if tags:
        cfg["parameters"]["tags"] = {"value": list(tags)}
    cfg.setdefault("command", AGENT_COMMAND)
    return cfg


def _online(config, teacher_spec, teacher, out, count, project, entity, tags, mlp_method) -> None:
    import wandb

    shared = _shared_teacher(teacher_spec, teacher, config["name"], project, entity)
    try:
        sweep_id = wandb.sweep(online_config(config, shared, out, mlp_method, tags), project=project, entity=entity)
        entity = entity or wandb.Api().default_entity
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        raise KdmechError(f"could not create the W&B sweep: {str(e).strip().splitlines()[0]}") from None
    path = f"{entity}/{project}/{sweep_id}"
    print(f"W&B sweep {path} created: https://wandb.ai/{entity}/{project}/sweeps/{sweep_id}\n"
          f"start more agents on other machines (in a kdmech checkout, its venv active) with\n"
          f"    wandb agent {path}\n"
          f"and build the whole sweep's report with: kdmech report --sweep {path}")
    agent = [sys.executable, "-m", "wandb", "agent", *(["--count", str(count)] if count else []), path]
    if subprocess.run(agent).returncode != 0:
        raise KdmechError(f"the W&B agent of sweep {path} failed (see its output above)")


def _shared_teacher(spec: str, folder: str, name: str, project: str, entity: str | None) -> str:
    """What every agent loads: a tiny teacher trained here is logged as a W&B model artifact
    (agents elsewhere download it); other teachers are shared as given."""
    if spec != TINY:
        return spec
    import wandb

    run = wandb.init(project=project, entity=entity, job_type="teacher", name=f"{name}-teacher",
                     group=name, dir=str(Path(folder).parent), settings=wandb.Settings(quiet=True, console="off"))
    artifact = run.log_artifact(str(folder), name=f"teacher-{name}", type="model")
    artifact.wait()
    ref = f"{ARTIFACT}{run.entity}/{run.project}/teacher-{name}:{artifact.version}"
    finish()
    return ref


