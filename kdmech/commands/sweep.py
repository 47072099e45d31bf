"""`kdmech sweep sweeps/NAME.yaml`: run a capacity sweep (see kdmech.sweep)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser

from kdmech.analysis.matching import resolve_mlp_method
from kdmech.analysis.options import LIGHT_PAIR_OPTIONS, AnalysisSchedule
from kdmech.commands.analyze import analyze
from kdmech.commands.distill import distill
from kdmech.commands.timeline import timeline
from kdmech.commands.train_teacher import train_teacher
from kdmech.errors import KdmechError
from kdmech.report.html import write_report
from kdmech.sweep import SweepState, expand, load_sweep, nested, point_name, varying_keys
from kdmech.run_layout import RunLayout
from kdmech.tracking import WandbMode, finish, resolve_mode
from kdmech.validation import check_model, check_out_dir, check_sweep_parameters, check_task, check_training

FIXED = ("teacher", "out", "name", "resume", "wandb", "progress", "group")


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
    `capacity.width`; a width drawn from a distribution (online random/bayes) means cka."""
    params = config["parameters"]
    method = params.get("analysis.mlp_similarity", {}).get("value", "auto")
    if points:
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


def _teacher(value: str, out: Path, mode: str, progress: bool) -> str:
    if value != "tiny":
        return value
    folder = out / "teacher"
    if not (folder / "eval.json").exists():
        print(f"== training the tiny teacher into {folder}")
        train_teacher(folder, wandb=mode, wandb_dir=out, progress=progress)
    return str(folder)


def sweep(config_file: Path, out: Path | None = None, count: int | None = None,
          wandb: WandbMode = "auto", pair_analyses: bool = True, project: str = "kdmech",
          progress: bool = True) -> dict:
    """Run a W&B-format capacity sweep: online through a W&B agent, offline point by point.

    Args:
        config_file: Sweep YAML in W&B's format (method, parameters, ...).
        out: Sweep folder (default runs/sweeps/<sweep name>).
        count: Points to run (random sweeps; for grids, at most this many).
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        pair_analyses: After the points, run sensitivity, noise and shift per student for the report.
        project: W&B project.
        progress: Show progress bars.
    """
    config = load_sweep(config_file)
    check_sweep_parameters(config, f"sweep file {str(config_file)!r}")
    mode = resolve_mode(wandb)
    out = Path(out or Path("runs/sweeps") / config["name"])
    teacher_spec = config["parameters"].get("teacher", {}).get("value")
    if not teacher_spec:
        raise KdmechError("a sweep needs `teacher: {value: ...}` (a model name, a folder, or tiny)")
    kind = check_model(teacher_spec, "teacher") if teacher_spec != "tiny" else "causal"
    check_out_dir(out)
    points = None if mode == "online" else expand(config, count)
    if points:
        for p in points:  # validate every point before any work
            kwargs = _distill_kwargs({k: v for k, v in p.items() if k != "teacher"})
            if "training" in kwargs:
                check_training(kwargs["training"])
            if "analysis" in kwargs:
                check_task(kwargs["analysis"].task, kind)
    mlp_method = _mlp_method(config, points)
    out.mkdir(parents=True, exist_ok=True)
    teacher = _teacher(teacher_spec, out, mode, progress)
    if mode == "online":
        _online(config, teacher, out, count, project, mlp_method)
    else:
        _local(config, points, teacher, out, mode, progress, mlp_method)
    state = SweepState(out, config["name"], points or [])
    layout = RunLayout(out)
    if pair_analyses:
        for name, done in state.data["done"].items():
            if not (layout.pair_analysis(name) / "analysis.json").exists():
                print(f"== pair analysis of {name}")
                options = replace(LIGHT_PAIR_OPTIONS, mlp_similarity=done.get("mlp_similarity", mlp_method))
                analyze(teacher, str(layout.student(name)), layout.pair_analysis(name),
                        analyses=["sensitivity", "noise", "shift"], analysis=options, progress=progress)
    timeline(out)
    path = write_report(out)
    _upload_report(path, out, config["name"], mode, project)
    print(f"sweep {config['name']}: {len(state.data['done'])} points done; report {path}")
    return state.data


def _local(config, points, teacher, out, mode, progress, mlp_method) -> None:
    state = SweepState(out, config["name"], points)
    varying = varying_keys(config)
    for i, point in enumerate(points, 1):
        name = point_name(point, varying)
        if state.done(name):
            print(f"== point {i}/{len(points)} {name}: done already, skipped")
            continue
        resume = (RunLayout(out).checkpoints(name) / "last.ckpt").exists()
        print(f"== point {i}/{len(points)} {name}" + (" (resuming from its checkpoint)" if resume else ""))
        kwargs = _point_kwargs({k: v for k, v in point.items() if k != "teacher"}, mlp_method)
        result = distill(teacher, out, name=name, resume=resume, wandb=mode, progress=progress,
                         group=config["name"], **kwargs)
        state.finish(name, asdict(result) | {"point": point,
                                             "mlp_similarity": kwargs["analysis"].mlp_similarity})


def _online(config, teacher, out, count, project, mlp_method) -> None:
    import wandb

    cfg = json.loads(json.dumps(config))
    cfg["parameters"]["teacher"] = {"value": str(Path(teacher).resolve()) if Path(teacher).exists() else teacher}
    cfg["parameters"]["out"] = {"value": str(out.resolve())}
    cfg.setdefault("command", ["${env}", "kdmech", "distill", "${args}"])
    try:
        sweep_id = wandb.sweep(cfg, project=project)
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        raise KdmechError(f"could not create the W&B sweep: {str(e).strip().splitlines()[0]}") from None
    print(f"W&B sweep {sweep_id} created; start more agents on other machines with\n"
          f"    wandb agent <entity>/{project}/{sweep_id}")
    state = SweepState(out, config["name"], [])
    varying = varying_keys(config)

    def run_point():
        run = wandb.init()
        point = {k: v for k, v in dict(run.config).items() if k not in ("teacher", "out")}
        name = point_name(point, varying)
        kwargs = _point_kwargs(point, mlp_method)
        result = distill(teacher, out, name=name, wandb="online", group=config["name"], **kwargs)
        state.finish(name, asdict(result) | {"point": point,
                                             "mlp_similarity": kwargs["analysis"].mlp_similarity})

    wandb.agent(sweep_id, function=run_point, count=count, project=project)


def _upload_report(path: Path, out: Path, name: str, mode: str, project: str) -> None:
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=project, dir=str(out), mode=mode, group=name, job_type="report",
                     name=f"{name}-report", settings=wandb.Settings(quiet=True, console="off"))
    run.log({"report": wandb.Html(path.read_text())})
    finish()
