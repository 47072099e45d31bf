"""A run's final numbers in W&B: each student's `final/...` keys in `run.summary` (what W&B's
run table and scatter panels read, e.g. final/A against final/parameter_ratio) and its analysis
records as an `analysis-<student>` artifact (what `kdmech report --sweep` downloads)."""

from __future__ import annotations

import json

from kdmech.tracking import JournaledWandbLogger


FINAL_KEYS = ("A", "A_heads", "A_mlp", "worst_drop", "worst_node", "worst_drop_teacher", "worst_drop_ratio",
              "logit_diff", "teacher_logit_diff", "top1", "parameters", "teacher_parameters",
              "parameter_ratio", "circuit_nodes", "circuit_edges", "circuit_completeness", "teacher_circuit_nodes")
"""The keys of `final_summary` (under `final/`, or `final/<student>/` when a run trains several)."""


def final_summary(result, layout, name: str) -> dict:
    """A student's final numbers, for W&B's run.summary: A and its parts, the worst single-node
    drop (student, teacher, ratio), LD and top-1, parameters and their ratio to the teacher's,
    and the last circuit's size (edges when they were pruned; absent before any circuit)."""
    from kdmech.analysis.record import CheckpointRecord, last_circuits

    records = CheckpointRecord.load_all(layout, name)
    out = {"logit_diff": result.logit_diff, "teacher_logit_diff": result.teacher_logit_diff,
           "top1": result.top1, "parameters": result.parameters,
           "teacher_parameters": result.teacher_parameters,
           "parameter_ratio": result.parameters / result.teacher_parameters}
    if records:
        p = records[-1].pair
        out |= {"A": p.alignment.A, "A_heads": p.alignment.A_heads, "A_mlp": p.alignment.A_mlp,
                "worst_drop": p.worst_drop.student.value, "worst_node": p.worst_drop.student.node,
                "worst_drop_teacher": p.worst_drop.teacher.value, "worst_drop_ratio": p.worst_drop.ratio}
    circuits = last_circuits(records)
    if circuits is not None and not circuits.error:
        out |= {"circuit_nodes": len(circuits.student.nodes), "circuit_completeness": circuits.student.completeness,
                "teacher_circuit_nodes": len(circuits.teacher.nodes)}
        if circuits.student.edges_pruned:
            out["circuit_edges"] = len(circuits.student.edges)
    return out


def log_finals(logger, results: list, layout, prefixed: bool, step: int, teacher: str = "") -> None:
    """Each student's `final_summary` into the run's summary, its analysis records (step and
    circuit JSONs, prompts, provenance, config.yaml) as an `analysis` artifact — what `kdmech
    report --sweep` downloads to build the capacity report from W&B — and the student itself as
    a model artifact (kdmech.lineage)."""
    from kdmech.lineage import log_student

    if not isinstance(logger, JournaledWandbLogger):
        return
    for r in results:
        prefix = f"final/{r.name}/" if prefixed else "final/"
        logger.experiment.summary.update({prefix + k: v for k, v in final_summary(r, layout, r.name).items()})
        files = sorted(layout.analysis(r.name).glob("*.json")) + [
            f for f in (layout.provenance(r.name), layout.student_config(r.name))
            if f.exists()]
        logger.log_files_artifact(f"analysis-{r.name}", "analysis", files, step,
                                  {"student": r.name, "result": _plain(r)})
        log_student(logger, r.name, layout.student(r.name), step, teacher)


def _plain(result) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(result), default=str))
