"""`kdmech distill-shared`: several students, one teacher forward pass per batch.

The same core as `kdmech distill` (`distill_students`), with every option of it; the same
outputs per student (students/<name>, analysis/<name>); one checkpoint for the whole module
under checkpoints/shared/ (with the W&B run id, for --resume) and one W&B run whose keys carry
each student's name.
"""

from __future__ import annotations

from pathlib import Path

from kdmech.analysis.options import AnalysisSchedule
from kdmech.distill.trainer import Devices, TrainerOptions
from kdmech.teacher import resolve_teacher
from kdmech.commands.distill import DistillTraining, StudentResult, distill_students
from kdmech.distill.text import DataOptions
from kdmech.commands.birth import ImportanceOptions
from kdmech.distill import LossWeights
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec
from kdmech.models.capacity import InitStrategy
from kdmech.tracking import WandbMode


def distill_shared(teacher: str, out: Path, capacities: list[CapacitySpec],
                   names: list[str] | None = None, init: InitStrategy = "every_k",
                   importance: ImportanceOptions = ImportanceOptions(),
                   loss: LossWeights = LossWeights(), training: DistillTraining = DistillTraining(),
                   analysis: AnalysisSchedule = AnalysisSchedule(), data: DataOptions = DataOptions(),
                   trainer: TrainerOptions = TrainerOptions(), strategy: str = "auto",
                   devices: Devices = 1, resume: bool = False, wandb: WandbMode = "auto",
                   progress: bool = True, group: str | None = None, accelerator: str = "auto",
                   num_nodes: int = 1, project: str = "kdmech", entity: str | None = None,
                   tags: list[str] | None = None) -> list[StudentResult]:
    """Distil one student per capacity against a single teacher pass per batch.

    Args:
        teacher: Hub name (gpt2, bert-base-uncased, distilbert-base-uncased, ...), a
            save_pretrained folder, a W&B artifact (wandb-artifact://entity/project/name:version,
            downloaded once into out/teachers/), or `tiny` (the embedded tiny teacher, trained
            once into out/teacher), as in `distill`.
        out: Run folder (students/<name>, analysis/<name>, checkpoints/shared, wandb/).
        capacities: One student per capacity.
        names: Student names, one per capacity (default: the capacities' names; must differ).
        init: Initialisation from the teacher: every_k, first_k, random or importance (as in
            `distill`; the teacher is scored once for every student).
        importance: How init importance scores the teacher and on what.
        loss: Distillation loss weights and temperature.
        training: Optimisation settings (shared by all students).
        analysis: Checkpoint analysis settings (applied to every student; an `auto` MLP
            similarity is resolved once for all the capacities: cka if any width ratio < 1).
        data: The text to distil on: local files or a hub corpus, packed into blocks, with a
            held-out split (default: the synthetic task corpus; training.n_train then unused).
        trainer: Trainer controls: precision, gradient accumulation and clipping, validation
            and checkpoint cadences (in optimizer steps).
        strategy: Lightning strategy (auto, ddp, ddp_spawn, fsdp, ...).
        devices: Devices: a count, a list of device indices, or auto (all of the accelerator's).
        resume: Continue from checkpoints/shared/last.ckpt if it exists (and its W&B run).
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        progress: Show the progress bar.
        group: W&B group (default: the run folder's name, shared by the teacher and report runs).
        accelerator: Lightning accelerator: auto (GPUs when present), cpu, gpu.
        num_nodes: Machines taking part (multi-node DDP/FSDP; launch one process per node).
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of the run.
    """
    rounds = [c.rounds for c in capacities if c.rounds > 1]
    if rounds:
        raise KdmechError(f"capacity rounds {rounds[0]} is for `kdmech distill` (one student pruned round by round); "
                          f"distill-shared trains every student in one run: accepted rounds 1")
    teacher = resolve_teacher(teacher, out, wandb, progress)
    options = dict(locals())  # this command's options, as `kdmech distill-shared --config` reads them
    del options["rounds"]
    return distill_students(teacher, out, capacities, names, run="shared", init=init, importance=importance,
                            loss=loss, training=training, analysis=analysis, data=data, trainer=trainer,
                            strategy=strategy, devices=devices, resume=resume, wandb=wandb, progress=progress,
                            group=group,
                            accelerator=accelerator, num_nodes=num_nodes, project=project, entity=entity,
                            tags=tags, options=options, command="distill-shared")
