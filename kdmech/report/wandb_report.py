"""Results that are not a training run, in W&B: the capacity table and HTML report of a
quickstart or sweep (one `report` run), and a `kdmech analyze` pair analysis (one `analyze`
run). Both runs are offline unless W&B is configured, like every kdmech run; `kdmech report
--sweep` reads a sweep's runs back through W&B's public API (kdmech.report.from_wandb)."""

from __future__ import annotations

import math
from pathlib import Path

from kdmech.analysis.analyze_result import AnalyzeResult
from kdmech.report.collect import StudentRecord, collect
from kdmech.report.replicates import METRICS, group_by_capacity, has_replicates, metric_values
from kdmech.run_config import resolved
from kdmech.lineage import study_group
from kdmech.run_layout import RunLayout
from kdmech.tracking import finish, resolve_mode
from kdmech.wandb_restructuring import EVENT_COLUMNS, event_rows

CAPACITY_COLUMNS = ["student", "depth", "width", "heads", "seed", "init", "parameters", "parameter_ratio",
                    "A", "A_heads", "A_mlp", "worst_drop", "worst_drop_teacher", "worst_drop_ratio",
                    "severity", "logit_diff", "teacher_logit_diff", "circuit_nodes"]
"""One row per student: W&B's scatter of A (or any metric) against parameter_ratio is the
capacity comparison; `kdmech quickstart`/`sweep` log it as the `capacity` table."""


def _number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def capacity_rows(records: list[StudentRecord]) -> list[list]:
    rows = []
    for r in records:
        f, m = r.final, metric_values(r)
        rows.append([r.name, r.capacity.get("depth"), r.capacity.get("width"), r.capacity.get("heads"), r.seed,
                     r.init, r.parameters, r.param_ratio, f.alignment.A, f.alignment.A_heads, f.alignment.A_mlp,
                     m["worst_drop"], f.worst_drop.teacher.value, m["worst_ratio"], m["severity"],
                     m["ld"], f.logit_diff["teacher"], m["circuit_nodes"]])
    return [[_number(x) for x in row] for row in rows]


def ratio_rows(records: list[StudentRecord]) -> list[list]:
    """[student, parameter ratio, final A] per student."""
    return [[r.name, _number(r.param_ratio), _number(r.final.alignment.A)] for r in records]


def report_event_rows(root: Path) -> list[list]:
    """Every student's restructuring events (timeline/<student>/events.json), student first."""
    import json

    layout, rows = RunLayout(root), []
    for name in layout.analysed_students():
        path = layout.events_json(name)
        if path.exists():
            rows += event_rows(json.loads(path.read_text())["events"], name)
    return rows


def replicate_rows(records: list[StudentRecord]) -> tuple[list[str], list[list]]:
    """Per capacity: n seeds and, per metric, the mean and the 95% interval's ends."""
    columns = ["capacity", "parameter_ratio", "n_seeds"]
    for key in METRICS:
        columns += [key, f"{key}_low", f"{key}_high"]
    rows = []
    for g in group_by_capacity(records):
        row = [g.label, g.param_ratio, g.n]
        for key in METRICS:
            iv = g.stats[key]
            row += [iv.mean, iv.low, iv.high]
        rows.append([_number(x) for x in row])
    return columns, rows


def _init(root: Path, name: str, job_type: str, mode: str, project: str, entity, tags, config: dict,
          group: str | None = None):
    """The W&B run `<name>-<job_type>` in `group` (default `name`), or None when W&B refuses it
    (a bad key, no network online): the results are on disk already, so that is a warning, not
    a failure."""
    import wandb

    try:
        return wandb.init(project=project, entity=entity, tags=list(tags) if tags else None, dir=str(root),
                          mode=mode, group=group or name, job_type=job_type, name=f"{name}-{job_type}",
                          config=config, settings=wandb.Settings(quiet=True, console="off"))
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"[wandb] the {job_type} run was not logged ({first}); its files are in {root}")
        return None


def log_report(root: str | Path, name: str, mode: str = "auto", project: str = "kdmech",
               entity: str | None = None, tags: list[str] | None = None) -> None:
    """One `report` run in group `name`: the `capacity` table (CAPACITY_COLUMNS), A against the
    parameter ratio three ways (W&B's scatter chart; the plain table `capacity/A_and_parameter_ratio`;
    and `<student>/A`, `<student>/parameter_ratio` in run.summary, readable offline), every
    student's restructuring events as the table `timeline/event_table`, the `replicates` table when
    seeds repeat a capacity, and the HTML report (report/report.html, already written) as
    `wandb.Html`."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return
    import wandb

    root = Path(root)
    records = collect(root)
    run = _init(root, name, "report", mode, project, entity, tags,
                resolved("report", {"folder": root, "students": [r.name for r in records]}))
    if run is None:
        return
    table = wandb.Table(columns=CAPACITY_COLUMNS, data=capacity_rows(records))
    title = "A against the student/teacher parameter ratio"
    logged = {"capacity": table, "capacity/A_vs_parameter_ratio": wandb.plot.scatter(table, "parameter_ratio", "A",
                                                                                     title=title),
              "capacity/A_and_parameter_ratio": wandb.Table(columns=["student", "parameter_ratio", "A"],
                                                              data=ratio_rows(records)),
              "timeline/event_table": wandb.Table(columns=["student", *EVENT_COLUMNS], data=report_event_rows(root))}
    run.summary.update({f"{student}/{key}": value for student, ratio, a in ratio_rows(records)
                        for key, value in (("parameter_ratio", ratio), ("A", a))})
    if has_replicates(group_by_capacity(records)):
        columns, rows = replicate_rows(records)
        logged["replicates"] = wandb.Table(columns=columns, data=rows)
    html = RunLayout(root).report_html
    if html.exists():
        logged["report"] = wandb.Html(html.read_text())
    run.log(logged)
    finish()


def log_analysis(out: str | Path, result: AnalyzeResult, options: dict, mode: str = "auto", project: str = "kdmech",
                 entity: str | None = None, tags: list[str] | None = None) -> None:
    """One `analyze` run (its files in `out`/wandb): the pair's headline numbers in run.summary
    (A and its parts with the bootstrap interval, LDs, worst drops, circuit sizes, severity),
    the matching as a table, and every PNG the analysis drew."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return
    import wandb

    out = Path(out)
    in_run = out.parent.name == "pair-analysis"  # a quickstart's or sweep's: that study's group
    run = _init(out, Path(str(result.student)).name, "analyze", mode, project, entity, tags,
                resolved("analyze", options), study_group(out.parent.parent) if in_run else None)
    if run is None:
        return
    run.summary.update(analysis_summary(result))
    pairs = result.matching["pairs"]
    if pairs:
        columns = list(pairs[0])
        run.log({"matching": wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in pairs])})
    for png in sorted(out.glob("*.png")):
        run.log({f"plots/{png.stem}": wandb.Image(str(png))})
    finish()


def analysis_summary(result: AnalyzeResult) -> dict:
    """The headline numbers of an analysis.json, flat, for run.summary."""
    a, wd = result.alignment, result.worst_drop
    out = {"A": a["A"], "A_heads": a["A_heads"], "A_mlp": a["A_mlp"],
           "A_ci95_low": result.A_ci95[0], "A_ci95_high": result.A_ci95[1],
           "logit_diff_teacher": result.logit_diff["teacher"], "logit_diff_student": result.logit_diff["student"],
           "worst_drop_student": wd.student.value, "worst_drop_teacher": wd.teacher.value,
           "worst_drop_ratio": wd.ratio, "n_prompts": result.n_prompts, "teacher_weak": result.teacher_weak}
    if result.sign_range:  # the authors' MLP score: A over the eigenvector sign choices
        out["A_sign_range_low"], out["A_sign_range_high"] = result.sign_range
    for who in result.circuit or {}:
        ref = result.reference_circuit(who)
        if ref is not None:
            out[f"circuit_nodes_{who}"] = len(ref["nodes"])
    if result.sensitivity is not None:
        out["severity_heads_student"] = result.severity("student")
        out["severity_heads_teacher"] = result.severity("teacher")
    return {k: _number(v) for k, v in out.items()}
