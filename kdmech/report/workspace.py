"""A W&B workspace for watching restructuring, as code (wandb-workspaces): what `kdmech
workspace ENTITY/PROJECT` saves. `build_workspace` is a pure function (no network): it names
only keys kdmech's runs log (kdmech.tracking.WandbSink, kdmech.wandb_restructuring,
kdmech.run_summary), so the test builds it and checks every key against an offline run's.

Sections: alignment over training (A, A_heads, A_mlp; grouped by capacity, so seeds of one
capacity draw one band), per-node influence (one line per node, teacher and student), per-node
attribution (runs that record attribution scores), circuits
(size, completeness, per-node membership), worst single-node drop, capacity (final/A against
final/parameter_ratio across runs), the restructuring pictures (media panels with a step
slider), the events and matching tables; the runs table shows the final/* columns."""

from __future__ import annotations

from kdmech.run_summary import FINAL_KEYS
from kdmech.tracking import STEP_KEY

CAPACITY_CONFIG = "kdmech.capacity"
"""The W&B config key holding a student run's capacity name (kdmech.commands.distill)."""
MEDIA_KEYS = ["timeline/influence_over_steps", "timeline/matching_flow", "timeline/alignment_parts",
              "timeline/events", "analysis/influence"]
TABLE_KEYS = ["timeline/event_table", "analysis/matching", "analysis/nodes", "analysis/attribution"]
FINAL_COLUMNS = ["A", "A_heads", "A_mlp", "parameter_ratio", "parameters", "worst_drop", "worst_drop_ratio",
                 "circuit_nodes", "logit_diff", "top1"]
assert set(FINAL_COLUMNS) <= set(FINAL_KEYS)


def _lines(wr, title: str, keys: list[str], by_capacity: bool = False, regex: str | None = None):
    extra = {"groupby": wr.Config(CAPACITY_CONFIG), "groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"} \
        if by_capacity else {}
    if regex is not None:
        extra["metric_regex"] = regex
    return wr.LinePlot(title=title, x=STEP_KEY, y=keys, title_x="step", **extra)


def _sections(ws, wr) -> list:
    return [
        ws.Section(name="Alignment over training", is_open=True, panels=[
            _lines(wr, "A over steps, by capacity", ["analysis/A"], by_capacity=True),
            _lines(wr, "A_heads and A_mlp", ["analysis/A_heads", "analysis/A_mlp"]),
            _lines(wr, "logit difference", ["analysis/ld_student", "analysis/ld_teacher"])]),
        ws.Section(name="Influence per node", is_open=True, panels=[
            _lines(wr, "student influence per node (%)", [], regex=r"^influence/student/.*"),
            _lines(wr, "teacher influence per node (%)", [], regex=r"^influence/teacher/.*")]),
        ws.Section(name="Attribution per node", is_open=True, panels=[
            _lines(wr, "student estimated drop by attribution per node (%; runs with attribution_scores)", [],
                   regex=r"^attribution/student/.*")]),
        ws.Section(name="Circuits", is_open=True, panels=[
            _lines(wr, "circuit size (nodes)", ["circuit/student_nodes", "circuit/teacher_nodes"]),
            _lines(wr, "student circuit completeness (%)", ["circuit/student_completeness"]),
            _lines(wr, "student circuit membership (1 in, 0 out; gaps: not computed)", [],
                   regex=r"^in_circuit/student/.*")]),
        ws.Section(name="Worst single-node drop", is_open=True, panels=[
            _lines(wr, "worst drop (%)", ["analysis/worst_drop_student", "analysis/worst_drop_teacher"]),
            _lines(wr, "worst drop student/teacher", ["analysis/worst_drop_ratio"], by_capacity=True)]),
        ws.Section(name="Capacity", is_open=True, panels=[
            wr.ScatterPlot(title="final A against the parameter ratio", x=wr.SummaryMetric("final/parameter_ratio"),
                           y=wr.SummaryMetric("final/A"))]),
        ws.Section(name="Restructuring pictures", is_open=True, panels=[
            wr.MediaBrowser(title=key, media_keys=[key], gallery_axis="step") for key in MEDIA_KEYS]),
        ws.Section(name="Restructuring tables", is_open=True, panels=[
            wr.WeavePanelSummaryTable(table_name=key) for key in TABLE_KEYS]),
    ]


def build_workspace(entity: str, project: str, sweep: str | None = None, group: str | None = None,
                    name: str | None = None):
    """The workspace of `entity/project`, its runs filtered to one W&B sweep id or one group
    when given (a quickstart's or sweep's: kdmech.lineage), the runs table showing the final/*
    columns and grouped by the W&B group."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    filters = []
    if sweep:
        filters.append(ws.Metric("Sweep") == sweep)
    if group:
        filters.append(ws.Metric("Group") == group)
    runset = ws.RunsetSettings(filters=filters, groupby=[ws.Metric("Group")],
                               pinned_columns=[f"summary:final/{k}" for k in FINAL_COLUMNS])
    title = name or "kdmech: restructuring" + (f" (sweep {sweep})" if sweep else f" ({group})" if group else "")
    return ws.Workspace(entity=entity, project=project, name=title, sections=_sections(ws, wr),
                        runset_settings=runset)


def panel_keys(workspace) -> tuple[set[str], set[str]]:
    """Every key the workspace's panels and runs table read (history and summary keys, without
    the x-axis), and every metric regex of its line plots."""
    import wandb_workspaces.reports.v2 as wr

    keys, regexes = set(), set()
    for section in workspace.sections:
        for panel in section.panels:
            if isinstance(panel, wr.LinePlot):
                keys |= {str(y) for y in panel.y}
                regexes |= {panel.metric_regex} if panel.metric_regex else set()
            elif isinstance(panel, wr.ScatterPlot):
                keys |= {panel.x.name, panel.y.name}
            elif isinstance(panel, wr.MediaBrowser):
                keys |= set(panel.media_keys)
            elif isinstance(panel, wr.WeavePanelSummaryTable):
                keys.add(panel.table_name)
    keys |= {c.split(":", 1)[1] for c in workspace.runset_settings.pinned_columns if c.startswith("summary:")}
    return keys, regexes
