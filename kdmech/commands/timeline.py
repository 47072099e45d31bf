"""`kdmech timeline DIR`: restructuring events of every student in a run or sweep folder."""

from __future__ import annotations

from pathlib import Path

from kdmech.analysis.restructuring import Rules
from kdmech.errors import KdmechError
from kdmech.report.timeline import student_timeline
from kdmech.run_layout import RunLayout
from kdmech.validation import check_run_folder
from kdmech.wandb_restructuring import shown_kind


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
    check_run_folder(folder)
    layout = RunLayout(folder)
    students = layout.analysed_students()
    if not students:
        raise KdmechError(f"{str(folder)!r} has no analysis/<student>/ folders; pass a run or sweep folder")
    rules = Rules(min_similarity, min_influence, min_probe, concentration_ratio)
    records = []
    for s in students:
        r = student_timeline(layout, s, rules)
        records.append(r)
        print(f"\n{s}: teacher circuit {r['teacher_circuit'] or '(no circuit yet)'}; "
              f"teacher functions {r['functions'] or 'none above the probe threshold'}")
        if not r["events"]:
            print("  no events")
        for e in r["events"]:
            lasting = "persists" if e["persists"] else "transient"
            print(f"  step {e['first_step']:>6}  {shown_kind(e):<13} {lasting:<9}  {e['detail']}")
    print(f"\npictures and events.json in {layout.timeline_root}; history.csv in each analysis/<student>/")
    return records
