"""A student's restructuring timeline: history CSVs, events.json and the four pictures (for
`kdmech timeline`, the end of a distillation run and the report)."""

from __future__ import annotations

import json

from kdmech.analysis.restructuring import Rules, find_events, load_history, write_history
from kdmech.report import timeline_figures as figs
from kdmech.run_layout import EVENTS_JSON, RunLayout

PICTURES = ("influence_over_steps", "matching_flow", "alignment_parts", "events")
OPTIONAL_PICTURES = ("attribution_over_steps",)
"""Drawn only for runs that record them (attribution scores: `--analysis.attribution_scores`)."""


def student_timeline(layout: RunLayout, name: str, rules: Rules = Rules()) -> dict:
    """History CSVs beside the JSONs; events.json and the PNGs in the student's timeline/."""
    h = load_history(layout, name, rules)
    write_history(layout, name, h)
    events = find_events(h.checkpoints, h.teacher_circuit, h.functions, rules)
    out_dir = layout.timeline(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs.influence_over_steps(h, out_dir / "influence_over_steps.png")
    figs.matching_flow(h, out_dir / "matching_flow.png", rules.min_influence)
    figs.alignment_parts(h, out_dir / "alignment_parts.png")
    figs.event_timeline(h, events, out_dir / "events.png")
    if not figs.attribution_over_steps(h, out_dir / "attribution_over_steps.png"):
        (out_dir / "attribution_over_steps.png").unlink(missing_ok=True)  # from an earlier run
    record = {"student": h.name, "teacher_circuit": h.teacher_circuit, "functions": h.functions,
              "rules": rules.__dict__, "events": [e.to_json() for e in events]}
    (out_dir / EVENTS_JSON).write_text(json.dumps(record, indent=1))
    return record


def picture_names(layout: RunLayout, name: str) -> list[str]:
    """The timeline's pictures of this student: every one of PICTURES, and the optional ones drawn."""
    return [*PICTURES, *(p for p in OPTIONAL_PICTURES if (layout.timeline(name) / f"{p}.png").exists())]


def picture_paths(layout: RunLayout, name: str) -> list:
    return [layout.timeline(name) / f"{p}.png" for p in picture_names(layout, name)]
