"""`kdmech distill`: one student at one capacity, analysed at checkpoints — and the core it
shares with `kdmech distill-shared` (`distill_students`: one or many students, one teacher
forward pass per batch; `distill` is that core with one capacity).

Writes, under the run folder `out`:
  students/<name>/              save_pretrained student + tokenizer + provenance.json
  checkpoints/<run>/            Lightning checkpoints after the validation at every analysis
                                step (last.ckpt, and previous.ckpt should the last read back
                                damaged), the W&B run id and the journal of its rows; <run> is
                                the student's name (distill) or shared
  analysis/<name>/step_<N>.json one PairAnalysis per checkpoint, plus prompts.json
  wandb/offline-run-*           the W&B run (group = the run folder's name, job type student)

`--resume` is exact: batches, BERT masking and dropout are functions of (seed, step), so a run
killed at any moment and resumed from its last checkpoint ends with the weights, analyses and
W&B history of an uninterrupted run (kdmech.distill.data, kdmech.distill.seeding,
kdmech.tracking.start_logging).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L

from kdmech.analysis.checkpoint import shared_teacher_side
from kdmech.analysis.matching import resolve_mlp_method
from kdmech.analysis.options import AnalysisSchedule
from kdmech.callbacks import CircuitAnalysisCallback
from kdmech.commands.birth import ImportanceOptions, Parent, birth_config, born, resolve_capacity, task_prompts
from kdmech.distill.trainer import Devices, ResumableCheckpoint, TrainerOptions, quiet_lightning, resume_point
from kdmech.run_layout import CONFIG_YAML, PROVENANCE_JSON, atomic_dir
from kdmech.teacher import resolve_teacher
from kdmech.distill.trainer import trainer as make_trainer
from kdmech.distill.text import DataOptions, TextDataModule, check_data
from kdmech.distill import CorpusDataModule, DistillationModule, LossWeights, make_masker
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, family_of, load_lm
from kdmech.models.capacity import InitStrategy
from kdmech.models.rounds import round_shapes
from kdmech.run_layout import RunLayout
from kdmech.tasks.filtering import accuracy_and_ld, competent_prompts
from kdmech.run_config import resolved, write_config_yaml
from kdmech.sweep import agent_point_name
from kdmech.run_summary import log_finals
from kdmech.tracking import WandbMode, begin_run, finish, make_logger
from kdmech.lineage import study_group, use_teacher
from kdmech.validation import check_distill


@dataclass(frozen=True)
class DistillTraining:
    """Optimisation of a student."""

    steps: int = 400
    """Optimizer steps (configs/distill/default.yaml and the quickstart's students use 400)."""
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    n_train: int = 20000
    seed: int = 0


@dataclass(frozen=True)
class StudentResult:
    name: str
    parameters: int
    teacher_parameters: int
    logit_diff: float
    top1: float
    teacher_logit_diff: float
    """The teacher's LD on the same (filtered) analysis prompts."""
    A: float
    worst_drop: float
    worst_node: str
    teacher_worst_drop: float
    seconds: float
    steps: list[int] = field(default_factory=list)
    teacher_weak: bool = False
    """The teacher failed the competence gate and was analysed anyway (allow_weak_teacher)."""


def analysis_prompts(teacher, tokenizer, schedule: AnalysisSchedule):
    """The analysis prompts (cloze form, read at [MASK], for masked LMs), filtered by the teacher,
    and the teacher's competence on them (the gate refuses a weak teacher here)."""
    prompts = task_prompts(teacher, tokenizer, schedule)
    return competent_prompts(teacher, prompts, schedule.min_teacher_top1, schedule.min_prompts,
                             schedule.allow_weak_teacher, schedule.filter_prompts,
                             max_batch_tokens=schedule.max_batch_tokens)


def distill(teacher: str, out: Path, capacity: CapacitySpec = CapacitySpec(),
            name: str | None = None, init: InitStrategy = "every_k",
            importance: ImportanceOptions = ImportanceOptions(), loss: LossWeights = LossWeights(),
            training: DistillTraining = DistillTraining(),
            analysis: AnalysisSchedule = AnalysisSchedule(), data: DataOptions = DataOptions(),
            trainer: TrainerOptions = TrainerOptions(), strategy: str = "auto",
            devices: Devices = 1, resume: bool = False, wandb: WandbMode = "auto",
            progress: bool = True, group: str | None = None, accelerator: str = "auto",
            num_nodes: int = 1, project: str = "kdmech", entity: str | None = None,
            tags: list[str] | None = None) -> StudentResult:
    """Distil one student from `teacher` and analyse it at checkpoints.

    Args:
        teacher: Hub name (gpt2, bert-base-uncased, distilbert-base-uncased, ...), a
            save_pretrained folder, a W&B artifact (wandb-artifact://entity/project/name:version,
            downloaded once into out/teachers/), or `tiny` (the embedded tiny teacher, trained
            once into out/teacher); BERT teachers get BERT students, masked-LM distillation and
            the cloze form of the task.
        out: Run folder; the student goes to out/students/<name>.
        capacity: Student size relative to the teacher (ratios in (0, 1]; or `params`, a
            fraction of its parameters; `rounds` to prune and distil in rounds).
        name: Student name (default: the capacity's name, e.g. d0.5-w1-h1 or p0.5; in a run a
            W&B sweep agent started, the sweep point's name: every swept value, see
            kdmech.sweep). With capacity.rounds N > 1 the earlier rounds' students are
            <name>-round1 .. <name>-round(N-1).
        init: Initialisation from the teacher: every_k, first_k, random, or importance (the
            most important blocks, heads, neurons and channels on calibration data; Minitron).
        importance: How init importance scores the teacher and on what.
        loss: Distillation loss weights and temperature.
        training: Optimisation settings.
        analysis: Checkpoint analysis settings.
        data: The text to distil on: local files or a hub corpus, packed into blocks, with a
            held-out split (default: the synthetic task corpus; training.n_train then unused).
        trainer: Trainer controls: precision, gradient accumulation and clipping, validation
            and checkpoint cadences (in optimizer steps).
        strategy: Lightning strategy (auto, ddp, ddp_spawn, fsdp, ...).
        devices: Devices: a count, a list of device indices, or auto (all of the accelerator's).
        resume: Continue from checkpoints/<name>/last.ckpt if it exists (and its W&B run),
            exactly: the result equals an uninterrupted run's with the same seed.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        progress: Show the progress bar.
        group: W&B group (default: the run folder's name, so a quickstart's or sweep's runs
            share one; a sweep's is its name).
        accelerator: Lightning accelerator: auto (GPUs when present), cpu, gpu.
        num_nodes: Machines taking part (multi-node DDP/FSDP; launch one process per node).
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of the run.
    """
    name = name or agent_point_name() or capacity.name
    given = teacher
    teacher = resolve_teacher(teacher, out, wandb, progress)
    options = dict(locals())  # this command's options, as `kdmech distill --config` reads them
    del options["given"]
    if capacity.rounds > 1:
        return _in_rounds(options, given)
    results = distill_students(teacher, out, [capacity], [name], init=init, importance=importance, loss=loss,
                               training=training, analysis=analysis, data=data, trainer=trainer, strategy=strategy,
                               devices=devices, resume=resume, wandb=wandb, progress=progress, group=group,
                               accelerator=accelerator, num_nodes=num_nodes, project=project, entity=entity,
                               tags=tags, options=options, command="distill", teacher_ref=given)
    return results[0] if results else None  # None on the other ranks of a distributed run, or when finished


def _in_rounds(options: dict, given: str) -> StudentResult | None:
    """--capacity.rounds N: round k prunes round k−1's student (the teacher in round 1) to
    round k's shape (kdmech.models.rounds) and distils it against the teacher for
    `training.steps` steps; rounds before the last are students <name>-round<k>, each with its
    checkpoints, analyses and W&B run. A round that finished is skipped by --resume."""
    o = dict(options)
    teacher, out, capacity, name, init = (o.pop(k) for k in ("teacher", "out", "capacity", "name", "init"))
    if init == "random":
        raise KdmechError(f"capacity.rounds {capacity.rounds} prunes a model each round, and init random copies "
                          f"nothing; accepted with rounds: every_k, first_k, importance")
    teacher_model = load_lm(teacher)[0]
    target, family = resolve_capacity(teacher_model, capacity), family_of(teacher_model)
    shapes = round_shapes(family.dims(teacher_model.config), family.shape(teacher_model.config, target),
                          capacity.rounds)
    layout, result, n = RunLayout(out), None, len(shapes)
    for k, shape in enumerate(shapes, 1):
        student = name if k == n else f"{name}-round{k}"
        print(f"== pruning round {k} of {n}: {student}, shape {shape}")
        parent = Parent(layout.student(f"{name}-round{k - 1}") if k > 1 else None, shape, k, n)
        results = distill_students(teacher, out, [target], [student], init=init, parent=parent, command="distill",
                                   options=options, teacher_ref=given, **o)
        result = results[0] if results else result
    return result


def _distillation_module(teacher_model, tokenizer, built: dict, loss: LossWeights,
                         training: DistillTraining) -> DistillationModule:
    """The LightningModule of the students `built` (name → (student, provenance))."""
    # Masked LMs: one corruption per batch for the teacher and every student, so drawn from the
    # teacher's vocabulary (the students share it: they are built from the teacher's config).
    masker = make_masker(family_of(teacher_model), tokenizer, teacher_model.config.vocab_size, training.seed)
    return DistillationModule(teacher_model, {n: s for n, (s, _) in built.items()},
                              {n: list(p["layer_map"].values()) for n, (_, p) in built.items()},
                              loss, training.lr, training.warmup_steps, masker, training.seed)


def distill_students(teacher: str, out: Path, capacities: list[CapacitySpec],
                     names: list[str] | None = None, run: str | None = None,
                     init: InitStrategy = "every_k", importance: ImportanceOptions = ImportanceOptions(),
                     loss: LossWeights = LossWeights(), training: DistillTraining = DistillTraining(),
                     analysis: AnalysisSchedule = AnalysisSchedule(), data: DataOptions = DataOptions(),
                     trainer: TrainerOptions = TrainerOptions(), strategy: str = "auto",
                     devices: Devices = 1, resume: bool = False, wandb: WandbMode = "auto",
                     progress: bool = True, group: str | None = None, accelerator: str = "auto",
                     num_nodes: int = 1, project: str = "kdmech", entity: str | None = None,
                     tags: list[str] | None = None, options: dict | None = None,
                     command: str = "distill-shared", teacher_ref: str | None = None,
                     parent: Parent | None = None) -> list[StudentResult]:
    """Distil one student per capacity against one teacher forward pass per batch, analyse
    each at checkpoints; the results in the order of `capacities` ([] on ranks other than 0).

    `names` default to the capacities' names and must differ; `run` (default: the student's
    name with one student, else "shared") names checkpoints/<run>/ and the W&B run. An `auto`
    MLP similarity is resolved once for all students (cka if any width ratio is below 1). The
    W&B group defaults to the run folder's name (one group per study: kdmech.lineage); with
    several students every logged key carries the student's name. The run's resolved options go to the
    W&B config and checkpoints/<run>/config.yaml: `options`, the calling command's own
    arguments, with the resolved MLP similarity and student names (`kdmech <command> --config`
    repeats the run);
    each student's final numbers to `run.summary` (`final/...`, kdmech.run_summary); its
    birth (init, shape, exact parameter ratio, teacher layers and heads kept, the importance
    ranking) to the W&B config under `kdmech.birth` (kdmech.commands.birth). `parent`: a
    pruning round's starting model (`distill --capacity.rounds`).
    `--resume` of a run that has finished (its checkpoint at `training.steps`, its students
    saved) says so and returns [] without loading, training or logging anything.
    Other arguments: as in `distill`.
    """
    quiet_lightning()
    check_distill(teacher, out, training, analysis)
    data = check_data(data, teacher)
    start, layout = time.perf_counter(), RunLayout(out)
    names, run = _names(capacities, names, run)
    point, finished = _resume_from(layout, run, names, training.steps) if resume else (None, False)
    if finished:  # --resume of a run that ended: nothing redone, no W&B run
        return []
    # one MLP method for every student (docs/method.md §7.2)
    # (a capacity in parameters picks its width later: unknown here, as a sweep's drawn widths)
    widths = None if any(c.params is not None for c in capacities) else [c.width for c in capacities]
    analysis = replace(analysis, mlp_similarity=resolve_mlp_method(analysis.mlp_similarity, widths))
    options = {**(options or {}), "analysis": analysis}
    config = resolved(command, options | ({"names": names} if "names" in options else {}))
    teacher_model, tokenizer, kind = load_lm(teacher)
    L.seed_everything(training.seed, verbose=False)
    built = born(teacher_model, tokenizer, capacities, names, init, training.seed, importance, analysis, data, parent)
    prompts, competence = (analysis_prompts(teacher_model, tokenizer, analysis)
                           if analysis.enabled else (None, None))
    module = _distillation_module(teacher_model, tokenizer, built, loss, training)
    analyses = analysis_callbacks(teacher_model, tokenizer, prompts, competence, analysis, layout, names)
    logger = _logger(layout, run, names, capacities, resume, config,
                     dict(group=group, mode=wandb, project=project, entity=entity, tags=tags), init,
                     birth_config(built))
    # Checkpoints are written at the end of a validation (by default at every analysis step),
    # once the step has logged everything: a resumed run logs nothing twice. The trainer's
    # validation loop runs at the gcd of the two cadences; each does its work at its own.
    val_every, ckpt_every, tick = trainer.cadences(max(1, analysis.every_n_steps or 100))
    module.val_every = val_every
    checkpoint = ResumableCheckpoint(layout.checkpoints(run), ckpt_every)
    datamodule = _data_module(tokenizer, data, training, kind)
    fit = make_trainer(training.steps, logger, [*analyses, checkpoint], strategy, devices,
                       default_root_dir=layout.root, progress=progress, val_every=tick,
                       accelerator=accelerator, num_nodes=num_nodes, precision=trainer.precision,
                       accumulate_grad_batches=trainer.accumulate_grad_batches,
                       gradient_clip_val=trainer.gradient_clip_val)
    try:
        if fit.is_global_zero:
            if fit.world_size > 1:
                print(f"distributed: {fit.world_size} processes, strategy {strategy}")
            _start_run(layout, names, prompts, logger, run, point, config, teacher_ref or teacher)
        fit.fit(module, datamodule, ckpt_path=str(point.path) if point else None, weights_only=True)  # no pickle
        # Resumed at its last step, Lightning skips training and its hooks: finish the analyses.
        for callback in analyses if fit.is_global_zero else []:
            if not callback.ended:
                callback.on_train_start(fit, module)
                callback.on_train_end(fit, module)
        if not fit.is_global_zero:
            return []
        results = [save_student(n, student, prov, tokenizer, teacher_model, prompts,
                                analyses[i].results if analyses else [], layout.student(n), start,
                                layout.run_config(run), analysis.max_batch_tokens)
                   for i, (n, (student, prov)) in enumerate(built.items())]
        log_finals(logger, results, layout, len(names) > 1, training.steps, teacher_ref or teacher)
        return results
    finally:
        finish(logger)


def _data_module(tokenizer, data: DataOptions, training: DistillTraining, kind: str):
    """Packed blocks of real text (`--data`, kdmech.distill.text), else the synthetic corpus."""
    if data.enabled:
        return TextDataModule(tokenizer, data, training.batch_size, training.seed, kind)
    return CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed, kind)


def _resume_from(layout: RunLayout, run: str, names: list[str], steps: int):
    """--resume: (the checkpoint to continue from or None, whether the run had finished), each
    said in one line. A damaged checkpoint is refused here, before anything is loaded."""
    point = resume_point(layout.checkpoints(run))
    if point is None:
        print(f"no checkpoint of {run} in {layout.checkpoints(run)}: starting from step 0")
        return None, False
    if point.step >= steps and all((layout.student(n) / "config.json").exists() for n in names):
        print(f"{run} finished at step {point.step} of {steps} already (students in {layout.root / 'students'}); "
              f"nothing to resume: raise --training.steps to train on, or drop --resume to start anew")
        return point, True
    print(f"resuming {run} from step {point.step} of {steps}")
    return point, False


def _start_run(layout: RunLayout, names: list[str], prompts, logger, run: str, point, config: dict,
               teacher: str) -> None:
    """On rank 0, before training: the run's config.yaml, each student's analysis prompts, the
    W&B run id (for --resume), for a resumed offline run the replayed history, and (online) the
    link to the teacher's model artifact."""
    write_config_yaml(layout.run_config(run), config)
    if prompts is not None:
        for n in names:
            layout.analysis(n).mkdir(parents=True, exist_ok=True)
            prompts.save(layout.prompts_json(n))
    if logger is not None:
        begin_run(logger, layout.wandb_run_id(run), point.step if point else 0)
        use_teacher(logger, teacher)


def _logger(layout: RunLayout, run: str, names: list[str], capacities: list[CapacitySpec], resume: bool,
            config: dict, wandb: dict, init: str, birth: dict):
    """The run's W&B logger: named after its student (or `shared-` and every student's name),
    in the group of the run folder (a quickstart's, a sweep's or a distill-shared's: every run
    of one study in one group; `group` overrides it), job type `student`, tagged with each
    capacity and the init; --resume continues the stored W&B run (from step 0 when killed
    before a checkpoint). `wandb`: group, mode, project, entity, tags."""
    run_id_file = layout.wandb_run_id(run)
    tags = list(dict.fromkeys([*(wandb.pop("tags") or []), *(f"capacity:{c.name}" for c in capacities),
                               f"init:{init}"]))
    config = config | {"kdmech": {**config.get("kdmech", {}), "capacity": "+".join(c.name for c in capacities),
                                  "birth": birth}}
    return make_logger(
        layout.wandb, name=run if names == [run] else f"{run}-" + "+".join(names),
        group=wandb.pop("group") or study_group(layout.root), job_type="student",
        journal=layout.wandb_journal(run),
        run_id=run_id_file.read_text().strip() if resume and run_id_file.exists() else None,
        config=config, tags=tags, **wandb)


def _names(capacities: list[CapacitySpec], names: list[str] | None, run: str | None):
    """The students' names (default: their capacities' names; they must differ) and the run's
    (default: the one student's name, else "shared")."""
    names = list(names or [c.name for c in capacities])
    if not capacities or len(names) != len(capacities) or len(set(names)) != len(names):
        raise KdmechError(f"one distinct name per capacity is needed, got {names} for "
                          f"{[c.name for c in capacities]}")
    return names, run or (names[0] if len(names) == 1 else "shared")


def analysis_callbacks(teacher_model, tokenizer, prompts, competence, analysis: AnalysisSchedule,
                       layout: RunLayout, names: list[str]) -> list[CircuitAnalysisCallback]:
    """One checkpoint analysis per student (none when analysis is disabled), into
    analysis/<name>; the teacher is profiled once for all of them (one `teacher_side`). With
    several students each finds its own by name and prefixes its W&B keys with it."""
    if not analysis.enabled:
        return []
    teacher_side = shared_teacher_side(teacher_model, prompts, analysis)
    return [CircuitAnalysisCallback(
        teacher_model, tokenizer, prompts, layout, n, analysis, teacher_side=teacher_side,
        teacher_competence=competence.to_json() if competence else None,
        prefix=f"{n}/" if len(names) > 1 else "") for n in names]


def save_student(name, student, provenance, tokenizer, teacher_model, prompts, results,
                 folder: Path, start: float, config_yaml: Path | None = None,
                 max_batch_tokens: int = 0) -> StudentResult:
    """Write students/<name> (model, tokenizer, provenance, the run's config.yaml) and
    summarise the student (its forwards on the prompts within `max_batch_tokens`)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    provenance = {**provenance, "parameters": count(student), "teacher_parameters": count(teacher_model)}
    provenance["parameter_ratio"] = provenance["parameters"] / provenance["teacher_parameters"]
    with atomic_dir(folder) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE_JSON).write_text(json.dumps(provenance, indent=1))
        if config_yaml is not None and config_yaml.exists():
            shutil.copyfile(config_yaml, tmp / CONFIG_YAML)
    scores = (accuracy_and_ld(student, prompts, max_batch_tokens) if prompts is not None
              else {"logit_diff": float("nan"), "top1": float("nan")})
    final = results[-1] if results else None
    nan = float("nan")
    return StudentResult(
        name=name, parameters=provenance["parameters"], teacher_parameters=provenance["teacher_parameters"],
        logit_diff=scores["logit_diff"], top1=scores["top1"],
        teacher_logit_diff=final.logit_diff["teacher"] if final else nan,
        A=final.alignment.A if final else nan,
        worst_drop=final.worst_drop.student.value if final else nan,
        worst_node=final.worst_drop.student.node if final else "",
        teacher_worst_drop=final.worst_drop.teacher.value if final else nan,
        seconds=time.perf_counter() - start, steps=[r.step for r in results],
        teacher_weak=final.teacher_weak if final else False)
