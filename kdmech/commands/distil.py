"""`kdmech distill`: one student at one capacity, analysed at checkpoints.

Writes, under the run folder `out`:
  students/<name>/              save_pretrained student + tokenizer + provenance.json
  students/<name>/checkpoints/  Lightning checkpoints (last.ckpt resumes with --resume)
  analysis/<name>/step_<N>.json one PairAnalysis per checkpoint, plus prompts.json
  wandb/offline-run-*           the W&B run (group = capacity)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from kdmech.analysis import AblationKind
from kdmech.analysis.presets import get_preset
from kdmech.callbacks import CircuitAnalysisCallback
from kdmech.commands.common import atomic_dir, quiet_lightning, trainer
from kdmech.distill import BertMasker, CorpusDataModule, DistillationModule, LossWeights
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_student, load_lm
from kdmech.models.capacity import InitStrategy
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.tasks.filtering import accuracy_and_ld, competent_prompts
from kdmech.tracking import WandbMode, finish, make_logger


@dataclass(frozen=True)
class DistillTraining:
    """Optimisation of a student."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    n_train: int = 20000
    seed: int = 0


@dataclass(frozen=True)
class AnalysisSchedule:
    """What the checkpoint analysis computes and how often."""

    every_n_steps: int = 200
    """Analyse every N optimizer steps (also before training and at the end); 0 = only those."""
    circuit_every_n_steps: int = 0
    """Circuits (with edges) and probes every N steps; 0 = only at the end."""
    circuits: bool = True
    """Discover circuits at all (at the end and on `circuit_every_n_steps`)."""
    enabled: bool = True
    """Run checkpoint analyses at all (off: plain distillation, e.g. for timing)."""
    task: str = "numerals"
    per_type: int = 128
    """Prompts per prompt type."""
    ablation: str = "mean"
    """mean, zero or resample."""
    filter_prompts: bool = True
    """Keep only prompts the teacher gets right with p(correct) > 2·p(wrong)."""
    min_teacher_top1: float = 0.9
    """Competence gate: refuse to analyse a teacher whose top-1 on the task is below this."""
    min_prompts: int = 64
    """Competence gate: refuse when fewer prompts than this survive the teacher filter."""
    allow_weak_teacher: bool = False
    """Analyse a teacher that fails the gate anyway; every output is marked teacher_weak."""
    matching_direction: str = "student_to_teacher"
    mlp_similarity: str = "auto"
    normalisation: str = "sum"
    preset: str = "kdmech"
    """kdmech, or authors: the paper authors' conventions where they differ (A from
    zero-ablation influence, their MLP similarity, IOI over Wang et al.'s templates, N = 100);
    see kdmech.analysis.presets."""

    def compare_options(self) -> dict:
        """The keyword arguments of every checkpoint's `compare`."""
        return {"direction": self.matching_direction, "mlp_method": self.mlp_similarity,
                "normalisation": self.normalisation}

    def __post_init__(self):
        # The preset's MLP similarity replaces "auto" (and is recorded); a clash is an error.
        object.__setattr__(self, "mlp_similarity", get_preset(self.preset).mlp_method(self.mlp_similarity))
        kinds = [k.value for k in AblationKind]
        if self.ablation not in kinds:
            raise KdmechError(f"ablation {self.ablation!r} is unknown; accepted: {kinds}")
        if self.every_n_steps < 0:
            raise KdmechError(f"every_n_steps must be ≥ 0, got {self.every_n_steps}")


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


def analysis_prompts(teacher, tokenizer, schedule: AnalysisSchedule, kind: str = "causal"):
    """The analysis prompts (cloze form, read at [MASK], for masked LMs), filtered by the teacher,
    and the teacher's competence on them (the gate refuses a weak teacher here)."""
    texts = get_task(schedule.task, cloze=kind == "masked",
                     **get_preset(schedule.preset).task_options(schedule.task, schedule.per_type)).prompts()
    prompts = check_same_tokenization(tokenizer, tokenizer, texts, kind)
    return competent_prompts(teacher, prompts, schedule.min_teacher_top1, schedule.min_prompts,
                             schedule.allow_weak_teacher, schedule.filter_prompts)


def distill(teacher: str, out: Path, capacity: CapacitySpec = CapacitySpec(),
            name: str | None = None, init: InitStrategy = "every_k",
            loss: LossWeights = LossWeights(), training: DistillTraining = DistillTraining(),
            analysis: AnalysisSchedule = AnalysisSchedule(), strategy: str = "auto",
            devices: int = 1, resume: bool = False, wandb: WandbMode = "auto",
            progress: bool = True, group: str | None = None, accelerator: str = "auto",
            num_nodes: int = 1) -> StudentResult:
    """Distil one student from `teacher` and analyse it at checkpoints.

    Args:
        teacher: Hub name (gpt2, bert-base-uncased, distilbert-base-uncased, ...) or a
            save_pretrained folder; BERT teachers get BERT students, masked-LM distillation
            and the cloze form of the task.
        out: Run folder; the student goes to out/students/<name>.
        capacity: Student size relative to the teacher (ratios in (0, 1]).
        name: Student name (default: the capacity's name, e.g. d0.5-w1-h1).
        init: Initialisation from the teacher: every_k, first_k or random.
        loss: Distillation loss weights and temperature.
        training: Optimisation settings.
        analysis: Checkpoint analysis settings.
        strategy: Lightning strategy (auto, ddp, ddp_spawn, fsdp, ...).
        devices: Number of devices (CPU processes on this machine).
        resume: Continue from students/<name>/checkpoints/last.ckpt if it exists.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        progress: Show the progress bar.
        group: W&B group (default: the capacity's name; sweeps group by sweep, then capacity).
        accelerator: Lightning accelerator: auto (GPUs when present), cpu, gpu.
        num_nodes: Machines taking part (multi-node DDP/FSDP; launch one process per node).
    """
    quiet_lightning()
    start = time.perf_counter()
    out = Path(out)
    name = name or capacity.name
    teacher_model, tokenizer, kind = load_lm(teacher)
    L.seed_everything(training.seed, verbose=False)
    student, provenance = build_student(teacher_model, capacity, init, seed=training.seed)
    prompts, competence = (analysis_prompts(teacher_model, tokenizer, analysis, kind)
                           if analysis.enabled else (None, None))
    student_dir, analysis_dir = out / "students" / name, out / "analysis" / name
    ckpt_dir = out / "checkpoints" / name
    last = ckpt_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    run_id_file = ckpt_dir / "wandb_run_id"
    run_id = run_id_file.read_text().strip() if ckpt_path and run_id_file.exists() else None

    masker = BertMasker(tokenizer, student.config.vocab_size, training.seed) if kind == "masked" else None
    module = DistillationModule(teacher_model, student, [int(v) for v in provenance["layer_map"].values()],
                                loss, training.lr, training.warmup_steps, masker)
    callback = CircuitAnalysisCallback(
        teacher_model, tokenizer, prompts, analysis_dir, analysis.every_n_steps, analysis.ablation,
        analysis.compare_options(), analysis.circuit_every_n_steps,
        circuits=analysis.circuits, preset=analysis.preset,
        teacher_competence=competence.to_json() if competence else None)
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                 every_n_train_steps=max(1, analysis.every_n_steps or 100))
    logger = make_logger(out, name=name, group=group or capacity.name, job_type=capacity.name,
                         mode=wandb, run_id=run_id,
                         config={"teacher": teacher, "capacity": asdict(capacity), "init": init,
                                 "loss": asdict(loss), "training": asdict(training),
                                 "analysis": asdict(analysis)})
    data = CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed, kind)
    fit = trainer(training.steps, logger, [callback, checkpoint] if analysis.enabled else [checkpoint],
                  strategy, devices, default_root_dir=out, progress=progress, val_every=None,
                  accelerator=accelerator, num_nodes=num_nodes)
    try:
        if fit.is_global_zero:
            if fit.world_size > 1:
                print(f"distributed: {fit.world_size} processes, strategy {strategy}")
            if prompts is not None:
                analysis_dir.mkdir(parents=True, exist_ok=True)
                prompts.save(analysis_dir / "prompts.json")
            if logger is not None:
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                run_id_file.write_text(logger.experiment.id)
        fit.fit(module, data, ckpt_path=ckpt_path)
    finally:
        finish()
    if not fit.is_global_zero:
        return None
    return save_student(name, student, provenance, tokenizer, teacher_model, prompts,
                        callback.results if analysis.enabled else [], student_dir, start)


def save_student(name, student, provenance, tokenizer, teacher_model, prompts, results,
                 folder: Path, start: float) -> StudentResult:
    """Write students/<name> (model, tokenizer, provenance) and summarise the student."""
    with atomic_dir(folder) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1))
    scores = (accuracy_and_ld(student, prompts) if prompts is not None
              else {"logit_diff": float("nan"), "top1": float("nan")})
    final = results[-1] if results else None
    nan = float("nan")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return StudentResult(
        name=name, parameters=count(student), teacher_parameters=count(teacher_model),
        logit_diff=scores["logit_diff"], top1=scores["top1"],
        teacher_logit_diff=final.logit_diff["teacher"] if final else nan,
        A=final.alignment.A if final else nan,
        worst_drop=final.worst_drop["student"]["value"] if final else nan,
        worst_node=final.worst_drop["student"]["node"] if final else "",
        teacher_worst_drop=final.worst_drop["teacher"]["value"] if final else nan,
        seconds=time.perf_counter() - start, steps=[r.step for r in results],
        teacher_weak=final.teacher_weak if final else False)
