"""`kdmech timeline DIR`: restructuring events of every student in a run or sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

from kdmech.analysis.restructuring import Rules, find_events, load_history, write_history
from kdmech.errors import KdmechError
from kdmech.report import timeline_figures as figs

PICTURES = ("influence_over_steps", "matching_flow", "alignment_parts", "events")


def student_timeline(analysis_dir: Path, out_dir: Path, rules: Rules = Rules()) -> dict:
    """History CSVs beside the JSONs; events.json and the four PNGs in `out_dir`."""
    write_history(analysis_dir)
    h = load_history(analysis_dir, rules)
    events = find_events(h.checkpoints, h.teacher_circuit, h.functions, rules)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs.influence_over_steps(h, out_dir / "influence_over_steps.png")
    figs.matching_flow(h, out_dir / "matching_flow.png", rules.min_influence)
    figs.alignment_parts(h, out_dir / "alignment_parts.png")
    figs.event_timeline(h, events, out_dir / "events.png")
    record = {"student": h.name, "teacher_circuit": h.teacher_circuit, "functions": h.functions,
              "rules": rules.__dict__, "events": [e.to_json() for e in events]}
    (out_dir / "events.json").write_text(json.dumps(record, indent=1))
    return record


def timeline(folder: Path, min_similarity: float = 0.5, min_influence: float = 5.0,
             min_probe: float = 0.5, concentration_ratio: float = 2.0) -> list[dict]:
    """Print each student's restructuring events and write the timeline pictures.

    Args:
        folder: A run or sweep folder (with analysis/<student>/step_<N>.json).
        min_similarity: Similarity a match needs to count.
        min_influence: Influence (%) that makes a student node active.
        min_probe: Probe score that makes a teacher head a "function" (successor, similar-member).
        concentration_ratio: Worst-drop ratio student/teacher that counts as concentration.
    """
    folder = Path(folder)
    analysis = folder / "analysis"
    students = sorted(p for p in analysis.glob("*") if p.is_dir()) if analysis.is_dir() else []
    if not students:
        raise KdmechError(f"{str(folder)!r} has no analysis/<student>/ folders; pass a run or sweep folder")
    rules = Rules(min_similarity, min_influence, min_probe, concentration_ratio)
    records = []
    for s in students:
        r = student_timeline(s, folder / "timeline" / s.name, rules)
        records.append(r)
        print(f"\n{s.name}: teacher circuit {r['teacher_circuit'] or '(no circuit yet)'}; "
              f"teacher functions {r['functions'] or 'none above the probe threshold'}")
        if not r["events"]:
            print("  no events")
        for e in r["events"]:
            print(f"  step {e['first_step']:>6}  {e['kind']:<13} {'persists' if e['persists'] else 'transient':<9}  {e['detail']}")
    print(f"\npictures and events.json in {folder / 'timeline'}; history.csv in each analysis/<student>/")
    return records
