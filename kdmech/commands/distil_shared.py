"""`kdmech distill-shared`: several students, one teacher forward pass per batch.

Same outputs per student as `kdmech distill` (students/<name>, analysis/<name>); one
checkpoint for the whole module under checkpoints/shared/ and one W&B run whose keys carry
each student's name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from kdmech.analysis.matching import resolve_mlp_method
from kdmech.callbacks import CircuitAnalysisCallback
from kdmech.commands.common import quiet_lightning, trainer
from kdmech.commands.distil import (AnalysisSchedule, DistillTraining, StudentResult, analysis_prompts,
                                   save_student)
from kdmech.distill import BertMasker, CorpusDataModule, LossWeights
from kdmech.distill.shared import SharedTeacherModule
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_student, load_lm
from kdmech.models.capacity import InitStrategy
from kdmech.tracking import WandbMode, finish, make_logger


def distill_shared(teacher: str, out: Path, capacities: list[CapacitySpec],
                   init: InitStrategy = "every_k", loss: LossWeights = LossWeights(),
                   training: DistillTraining = DistillTraining(),
                   analysis: AnalysisSchedule = AnalysisSchedule(), strategy: str = "auto",
                   devices: int = 1, resume: bool = False, wandb: WandbMode = "auto",
                   progress: bool = True) -> list[StudentResult]:
    """Distil one student per capacity against a single teacher pass per batch.

    Args:
        teacher: Hub name (e.g. gpt2) or a save_pretrained folder.
        out: Run folder (students/<name>, analysis/<name>, checkpoints/shared, wandb/).
        capacities: One student per capacity (names must differ).
        init: Initialisation from the teacher: every_k, first_k or random.
        loss: Distillation loss weights and temperature.
        training: Optimisation settings (shared by all students).
        analysis: Checkpoint analysis settings (applied to every student; an `auto` MLP
            similarity is resolved once for all the capacities: cka if any width ratio < 1).
        strategy: Lightning strategy (auto, ddp, ...).
        devices: Number of devices.
        resume: Continue from checkpoints/shared/last.ckpt if it exists.
        wandb: W&B mode: auto (offline unless a key is configured), online, offline, disabled.
        progress: Show the progress bar.
    """
    quiet_lightning()
    start = time.perf_counter()
    out = Path(out)
    names = [c.name for c in capacities]
    if not capacities or len(set(names)) != len(names):
        raise KdmechError(f"distill-shared needs one or more distinct capacities, got {names}")
    # One MLP similarity for every student, whatever its width (SPEC §7).
    analysis = replace(analysis, mlp_similarity=resolve_mlp_method(
        analysis.mlp_similarity, [c.width for c in capacities]))
    teacher_model, tokenizer, kind = load_lm(teacher)
    L.seed_everything(training.seed, verbose=False)
    built = {c.name: build_student(teacher_model, c, init, seed=training.seed) for c in capacities}
    prompts, competence = (analysis_prompts(teacher_model, tokenizer, analysis, kind)
                           if analysis.enabled else (None, None))
    masker = (BertMasker(tokenizer, teacher_model.config.vocab_size, training.seed)
              if kind == "masked" else None)
    module = SharedTeacherModule(
        teacher_model, {n: s for n, (s, _) in built.items()},
        {n: [int(v) for v in p["layer_map"].values()] for n, (_, p) in built.items()},
        loss, training.lr, training.warmup_steps, masker)
    callbacks, teacher_side = [], {}
    if analysis.enabled:
        callbacks = [CircuitAnalysisCallback(
            teacher_model, tokenizer, prompts, out / "analysis" / n, analysis.every_n_steps,
            analysis.ablation, analysis.compare_options(),
            analysis.circuit_every_n_steps, circuits=analysis.circuits, student_name=n,
            teacher_side=teacher_side, preset=analysis.preset,
            teacher_competence=competence.to_json() if competence else None) for n in names]
    ckpt_dir = out / "checkpoints" / "shared"
    last = ckpt_dir / "last.ckpt"
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                     every_n_train_steps=max(1, analysis.every_n_steps or 100)))
    logger = make_logger(out, name="shared-" + "+".join(names), group="shared", mode=wandb,
                         config={"teacher": teacher, "capacities": [asdict(c) for c in capacities],
                                 "loss": asdict(loss), "training": asdict(training)})
    data = CorpusDataModule(tokenizer, training.n_train, 500, training.batch_size, training.seed, kind)
    fit = trainer(training.steps, logger, callbacks, strategy, devices, default_root_dir=out,
                  progress=progress)
    try:
        if fit.is_global_zero and prompts is not None:
            for n in names:
                (out / "analysis" / n).mkdir(parents=True, exist_ok=True)
                prompts.save(out / "analysis" / n / "prompts.json")
        fit.fit(module, data, ckpt_path=str(last) if resume and last.exists() else None)
    finally:
        finish()
    if not fit.is_global_zero:
        return []
    results = []
    for i, (n, (student, prov)) in enumerate(built.items()):
        results.append(save_student(n, student, prov, tokenizer, teacher_model, prompts,
                                    callbacks[i].results if analysis.enabled else [],
                                    out / "students" / n, start))
    return results
