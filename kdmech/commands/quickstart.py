"""`kdmech quickstart`: tiny teacher → students at three depths → analysis → summary.

Everything runs offline in a few minutes on two CPU cores, for a GPT-2 (`--family gpt2`,
into runs/quickstart), a BERT (`--family bert`, into runs/quickstart-bert) or a Llama-layout
(`--family llama`: Llama, Mistral, Qwen2 or Qwen3 by `--tiny.model_type`, into
runs/quickstart-llama) teacher of the sizes `--tiny.*`. A teacher of the same family already in
`out/teacher` is reused unless `fresh` is set; `--teacher` (a folder or hub name, as in
`distill`) uses that model instead and trains none. Students are always trained anew.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

from kdmech.analysis.circuit import Circuit
from kdmech.analysis.matching import resolve_mlp_method
from kdmech.analysis.options import AnalysisSchedule, pair_analysis_plan
from kdmech.analysis.record import CheckpointRecord, last_circuits
from kdmech.commands.analyze import analyze
from kdmech.teacher import TINY, resolve_teacher
from kdmech.commands.distill import DistillTraining, distill
from kdmech.commands.timeline import timeline
from kdmech.teacher import HELD_OUT_SEED, TeacherTraining, train_teacher
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinySpec, load_lm
from kdmech.models.family import family_of, get_family
from kdmech.lineage import study_group
from kdmech.report.html import write_report
from kdmech.report.wandb_report import log_report
from kdmech.run_layout import RunLayout
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.tracking import WandbMode, resolve_mode
from kdmech.validation import check_model, check_out_dir, check_task, check_training


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _circuit_text(c: Circuit | None) -> str:
    if c is None:
        return "–"
    if c.empty:
        return f"none ({c.completeness:.0f}% all ablated)"
    return f"{len(c.nodes)}/{len(c.edges) if c.edges_pruned else '–'}"


def _teacher(layout: RunLayout, family: str, sizes: TinySpec, training: TeacherTraining,
             fresh: bool, wandb: WandbMode, progress: bool, where: dict) -> dict:
    """The tiny teacher's eval.json: trained into layout.teacher, or reused from there."""
    saved_eval = layout.teacher_eval
    if not fresh and saved_eval.exists():
        saved = json.loads(saved_eval.read_text()).get("family", "gpt2")
        if saved != family:
            raise KdmechError(f"{layout.teacher} holds a {saved} teacher, not {family}; pass --fresh "
                              f"to replace it or choose another --out")
        teacher_eval = json.loads(saved_eval.read_text())
        print(f"== reusing the teacher in {layout.teacher} (held-out top-1 {teacher_eval['top1']:.3f}); "
              f"--fresh retrains it")
        return teacher_eval
    print(f"== training the tiny {family} teacher ({sizes.n_layer} layers, {sizes.n_head} heads, "
          f"d_model {sizes.n_embd}) until held-out top-1 ≥ {training.target_top1:g} "
          f"(at most {training.steps} steps)")
    return train_teacher(layout.teacher, sizes, training, wandb, layout.root, progress, family, **where)


def _check_given_teacher(teacher: str, family: str, kind: str | None, actual: str | None = None) -> None:
    """A `--teacher` of another family than `--family` is refused (the family sets the
    distillation loss, the student's construction and the task's form): its kind before
    loading, its family (`actual`) once `_given_teacher` has loaded it."""
    wanted = get_family(family).kind
    if kind is not None and kind != wanted:
        other = "bert" if kind == "masked" else "gpt2"
        raise KdmechError(f"--teacher {teacher!r} is a {kind} LM, not a {wanted} one as --family "
                          f"{family} needs; pass --family {other}")
    if actual is not None and actual != family:
        raise KdmechError(f"--teacher {teacher!r} is a {actual} model, not of --family {family}; "
                          f"pass --family {actual}")


def _given_teacher(teacher: str, family: str) -> dict:
    """`--teacher`: an existing model instead of the tiny one, checked as `distill` checks it,
    with the held-out top-1 and LD that train-teacher reports, on the same prompts."""
    fam = get_family(family)
    net, tokenizer, kind = load_lm(teacher)
    _check_given_teacher(teacher, family, kind, family_of(net).name)
    task = NumeralTask(seed=HELD_OUT_SEED, cloze=fam.cloze, renumber=False)
    scores = accuracy_and_ld(net, tokenize_prompts(task.fit_to(tokenizer).prompts(), tokenizer, fam.kind))
    print(f"== using the teacher {teacher} (held-out top-1 {scores['top1']:.3f}); no tiny teacher trained")
    return {**scores, "family": family, "given": True}


def _print_summary(layout: RunLayout, results: list, teacher_eval: dict, summary: dict,
                   report_path: Path) -> None:
    """The final table and where everything went."""
    out = layout.root
    rows = [["student", "params", "LD", "top-1", "A", "worst drop", "teacher worst", "ratio",
             "circuit nodes/edges"]]
    circuits = {r.name: last_circuits(CheckpointRecord.load_all(layout, r.name)) for r in results}
    if results:
        first = circuits[results[0].name]
        rows.append(["teacher", f"{results[0].teacher_parameters:,}", f"{results[0].teacher_logit_diff:.2f}",
                     f"{teacher_eval['top1']:.3f}", "", "", "", "",
                     _circuit_text(first.teacher if first else None)])
    for r in results:
        c = circuits[r.name]
        rows.append([r.name, f"{r.parameters:,}", f"{r.logit_diff:.2f}", f"{r.top1:.3f}", f"{r.A:.3f}",
                     f"{r.worst_drop:.1f}% {r.worst_node}", f"{r.teacher_worst_drop:.1f}%",
                     f"{r.worst_drop / r.teacher_worst_drop:.2f}" if r.teacher_worst_drop else "inf",
                     _circuit_text(c.student if c else None)])
    print()
    print(_table(rows))
    print("LD on the filtered analysis prompts; teacher top-1 on held-out prompts; A = alignment; "
          "worst drop = largest single-node mean-ablation drop; circuit at T = 0.20 "
          "(edges: path-patched on the node circuit)")
    print(f"\nfinished in {summary['wall_seconds']:.0f}s; results in {out}/summary.json and "
          f"{out}/analysis/<student>/step_<N>.json")
    print(f"report: {report_path}")
    if summary["wandb_mode"] == "offline":
        print(f"W&B runs are offline in {out}/wandb: view them with `wandb leet {out}/wandb`, "
              f"upload them with `wandb sync {out}/wandb/offline-run-*`")


def quickstart(out: Path | None = None, family: Literal["gpt2", "bert", "llama"] = "gpt2",
               depths: list[float] = [0.25, 0.5, 0.75],  # noqa: B006 - jsonargparse needs a literal
               teacher: str | None = None,
               tiny: TinySpec = TinySpec(),
               teacher_training: TeacherTraining = TeacherTraining(),
               student_training: DistillTraining = DistillTraining(steps=400),
               analysis: AnalysisSchedule = AnalysisSchedule(every_n_steps=100, circuit_every_n_steps=200),
               fresh: bool = False, wandb: WandbMode = "auto", progress: bool = True,
               project: str = "kdmech", entity: str | None = None, tags: list[str] | None = None) -> dict:
    """Train a tiny teacher, distil students at several depth ratios, analyse them.

    Args:
        out: Run folder (teacher/, students/, analysis/, wandb/, summary.json); default
            runs/quickstart (gpt2), runs/quickstart-bert (bert) or runs/quickstart-llama (llama).
        family: Tiny teacher: gpt2 (next-token), bert (masked LM, masked-LM distillation,
            cloze prompts read at [MASK]; the task numerals becomes the family's tiny_task,
            numerals-any-start) or llama (next-token; 4 query heads in 2 KV groups, untied
            embeddings; `--tiny.model_type` llama, mistral, qwen2 or qwen3).
        depths: Student depth ratios, each in (0, 1].
        teacher: An existing teacher to use instead of training the tiny one: a hub name or a
            save_pretrained folder, as in `distill` (of the family `family` names); default:
            train the tiny teacher into out/teacher.
        tiny: Tiny teacher sizes (every family; `n_kv_head`, `model_type` for llama only;
            unused with `teacher`).
        teacher_training: Tiny teacher optimisation (unused with `teacher`).
        student_training: Student optimisation.
        analysis: Checkpoint analysis settings.
        fresh: Retrain the tiny teacher even if out/teacher exists.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        progress: Show progress bars.
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of every run.
    """
    fam = get_family(family)
    capacities = [CapacitySpec(depth=d) for d in depths]  # validates every ratio up front
    # One MLP similarity for every student and its pair analysis (docs/method.md §7.2).
    analysis = replace(analysis, mlp_similarity=resolve_mlp_method(
        analysis.mlp_similarity, [c.width for c in capacities]))
    out = Path(out or ("runs/quickstart" if family == "gpt2" else f"runs/quickstart-{family}"))
    check_out_dir(out)
    check_training(student_training)
    check_task(analysis.task, fam.kind)
    if teacher == TINY:  # the default: the tiny teacher of --family
        teacher = None
    if teacher is not None:
        teacher = resolve_teacher(teacher, out, wandb, progress)  # a W&B artifact: downloaded
        _check_given_teacher(teacher, family, check_model(teacher, "teacher"))
    if analysis.task == "numerals" and fam.tiny_task != "numerals":
        analysis = replace(analysis, task=fam.tiny_task)
        print(f"== {family}: analysing the task {fam.tiny_task} ({fam.tiny_task_note})")
    start = time.perf_counter()
    layout = RunLayout(out)
    if teacher is None:
        teacher_path = str(layout.teacher)
        teacher_eval = _teacher(layout, family, tiny, teacher_training, fresh, wandb, progress,
                                dict(project=project, entity=entity, tags=tags))
    else:
        teacher_path = teacher
        teacher_eval = _given_teacher(teacher, family)
    results = []
    for i, capacity in enumerate(capacities, 1):
        print(f"== student {i}/{len(capacities)}: depth ratio {capacity.depth:g} "
              f"({student_training.steps} steps, analysis every {analysis.every_n_steps})")
        results.append(distill(teacher_path, out, capacity, training=student_training,
                               analysis=analysis, wandb=wandb, progress=progress, project=project,
                               entity=entity, tags=tags))
    print("== pair analyses (sensitivity, noise validation, distribution shift) and the report")
    plan = pair_analysis_plan(analysis)  # the students' own task and analysis options
    for r in results:
        analyze(teacher_path, str(layout.student(r.name)), layout.pair_analysis(r.name),
                plan.task, ["sensitivity", "noise", "shift"], plan.options, progress,
                wandb="disabled")  # its numbers reach W&B in the report run
    summary = {"teacher": {"path": teacher_path, **teacher_eval},
               "students": [asdict(r) for r in results], "mlp_similarity": analysis.mlp_similarity,
               "wall_seconds": time.perf_counter() - start, "wandb_mode": resolve_mode(wandb)}
    layout.summary.write_text(json.dumps(summary, indent=1))
    timeline(out)
    report_path = write_report(out)
    log_report(out, study_group(out), wandb, project, entity, tags)
    _print_summary(layout, results, teacher_eval, summary, report_path)
    return summary
