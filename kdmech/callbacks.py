"""Lightning callbacks: thin adapters that call kdmech.analysis at checkpoints."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import lightning as L

import json

from kdmech.analysis import AblationKind, PairAnalysis, compare, profile
from kdmech.analysis.circuit import discover
from kdmech.analysis.presets import alignment_lds, get_preset, realign
from kdmech.analysis.probes import similar_member_scores, successor_scores
from kdmech.errors import KdmechError
from kdmech.report.heatmap import influence_figure, save_influence_png
from kdmech.tasks.prompt_set import PromptSet


class CircuitAnalysisCallback(L.Callback):
    """Every `every_n_steps` optimizer steps, before training and at the end, on rank 0:
    profile the student on `prompts`, compare it with the (once-computed) teacher profile,
    write `out_dir/step_<N>.json` and an influence heatmap, and log to the trainer's logger.
    Circuits (T = `circuit_threshold`, with edges) and probes are slower: they run every
    `circuit_every_n_steps` steps (0 = only at the end) into `circuit_step_<N>.json`, logged
    to W&B as a versioned artifact."""

    def __init__(self, teacher, tokenizer, prompts: PromptSet, out_dir: str | Path,
                 every_n_steps: int = 100, ablation: AblationKind = AblationKind.MEAN,
                 compare_options: dict | None = None, circuit_every_n_steps: int = 0,
                 circuit_threshold: float = 0.20, circuits: bool = True,
                 student_name: str | None = None, teacher_side: dict | None = None,
                 preset: str = "kdmech", teacher_competence: dict | None = None):
        self.teacher, self.tokenizer, self.prompts = teacher, tokenizer, prompts
        self.out_dir = Path(out_dir)
        self.every, self.ablation = every_n_steps, AblationKind(ablation)
        self.compare_options = compare_options or {}
        self.circuit_every, self.circuit_threshold = circuit_every_n_steps, circuit_threshold
        self.circuits = circuits
        # The competence gate's record of the teacher; marks every output (teacher_weak).
        self.teacher_competence = teacher_competence or {}
        self.preset = get_preset(preset)  # e.g. authors: A from zero-ablation influence
        # With several students in one module (shared teacher pass), each callback watches one
        # of them and prefixes its W&B keys with the student's name.
        self.student_name = student_name
        self.prefix = f"{student_name}/" if student_name else ""
        # The teacher's profile and circuit, computed once; callbacks of students distilled
        # from one teacher on one prompt set (distill-shared) pass the same dict.
        self.teacher_side = teacher_side if teacher_side is not None else {}
        self.last_student = None
        self.nodes_table = None
        self.done: set[int] = set()
        self.results: list[PairAnalysis] = []

    def _analyse(self, trainer: L.Trainer, pl_module, final: bool = False) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step in self.done:
            return
        self.done.add(step)
        start = time.perf_counter()
        if "profile" not in self.teacher_side:
            self.teacher_side["profile"] = profile(self.teacher, self.tokenizer, self.prompts, self.ablation)
        model = pl_module.student_named(self.student_name) if self.student_name else pl_module.student
        student = profile(model, self.tokenizer, self.prompts, self.ablation)
        self.last_student = student
        result = compare(self.teacher_side["profile"], student, step, self.prompts.task,
                         **self.compare_options)
        if "alignment_lds" not in self.teacher_side:
            self.teacher_side["alignment_lds"] = alignment_lds(self.preset, self.teacher_side["profile"])
        result = realign(result, self.preset, self.teacher_side["alignment_lds"],
                         alignment_lds(self.preset, student))
        result = replace(result, teacher_competence=self.teacher_competence)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result.save(self.out_dir / f"step_{step}.json")
        save_influence_png(self.out_dir / f"influence_step_{step}.png",
                           result.influence["teacher"], result.influence["student"],
                           f"influence at step {step}")
        self.results.append(result)
        self._log(trainer, result)
        print(f"[analysis] {self.prefix}step {step}: LD teacher {result.logit_diff['teacher']:.2f} "
                       f"student {result.logit_diff['student']:.2f}, A {result.alignment.A:.3f}, "
                       f"worst drop {result.worst_drop['student']['value']:.1f}% "
                       f"({result.worst_drop['student']['node']}) "
                       f"[{time.perf_counter() - start:.1f}s]")
        if self.circuits and (final or (self.circuit_every and step % self.circuit_every == 0)):
            self._circuits(trainer, step, student)
        self._timeline(trainer, step)

    def _probes(self, prof) -> dict:
        """Each probe on its own: one that does not apply (e.g. on an encoder) says why."""
        out = {}
        for key, fn in (("similar_member", lambda: similar_member_scores(prof)),
                        ("successor", lambda: successor_scores(prof.engine, self.tokenizer))):
            try:
                out[key] = fn()
            except KdmechError as e:
                out[key] = {"error": str(e)}
        return out

    def _timeline(self, trainer: L.Trainer, step: int) -> None:
        """Refresh history.csv and the restructuring pictures; log the pictures to W&B."""
        from kdmech.commands.timeline import PICTURES, student_timeline

        folder = self.out_dir.parent.parent / "timeline" / self.out_dir.name
        student_timeline(self.out_dir, folder)
        logger = trainer.logger
        if logger is not None and hasattr(logger, "log_image"):
            for picture in PICTURES:
                logger.log_image(f"timeline/{self.prefix}{picture}", images=[str(folder / f"{picture}.png")],
                                 step=step)

    def _log(self, trainer: L.Trainer, r: PairAnalysis) -> None:
        logger = trainer.logger
        if logger is None:
            return
        a = r.alignment
        metrics = {
            "analysis/ld_teacher": r.logit_diff["teacher"], "analysis/ld_student": r.logit_diff["student"],
            "analysis/A": a.A, "analysis/A_heads": a.A_heads, "analysis/A_mlp": a.A_mlp,
            "analysis/mean_similarity": a.mean_similarity,
            "analysis/worst_drop_student": r.worst_drop["student"]["value"],
            "analysis/worst_drop_teacher": r.worst_drop["teacher"]["value"],
            "analysis/worst_drop_ratio": r.worst_drop["ratio"],
        }
        logger.log_metrics({k.replace("analysis/", f"analysis/{self.prefix}", 1): v
                            for k, v in metrics.items()}, step=r.step)
        if not hasattr(logger, "experiment"):
            return
        import wandb

        t_inf, s_inf = r.influence["teacher"], r.influence["student"]
        if self.nodes_table is None:
            # One table for the whole run, grown at every checkpoint (W&B incremental mode):
            # W&B's charts can then follow any node over steps.
            self.nodes_table = wandb.Table(columns=["step", "student_node", "influence_student",
                                                    "matched_teacher_node", "influence_teacher",
                                                    "similarity"], log_mode="INCREMENTAL")
        for m in r.matching:
            self.nodes_table.add_data(r.step, m.student, s_inf[m.student], m.teacher,
                                      t_inf[m.teacher], m.similarity)
        logger.experiment.log({f"analysis/{self.prefix}nodes": self.nodes_table,
                               "trainer/global_step": r.step})
        import matplotlib.pyplot as plt

        fig = influence_figure(t_inf, s_inf, f"influence at step {r.step}")
        logger.log_image(f"analysis/{self.prefix}influence", images=[wandb.Image(fig)], step=r.step)
        plt.close(fig)

    def _circuits(self, trainer: L.Trainer, step: int, student) -> None:
        start = time.perf_counter()
        try:
            if "circuit" not in self.teacher_side:
                self.teacher_side["circuit"] = discover(self.teacher_side["profile"].engine,
                                                        self.circuit_threshold)
            circuit = discover(student.engine, self.circuit_threshold)
            record = {"step": step, "threshold": self.circuit_threshold,
                      "teacher": self.teacher_side["circuit"].to_json(), "student": circuit.to_json(),
                      "probes": {who: self._probes(prof)
                                 for who, prof in (("teacher", self.teacher_side["profile"]), ("student", student))}}
        except KdmechError as e:  # e.g. a student that does not solve the task yet
            record = {"step": step, "error": str(e)}
            circuit = None
        record["teacher_weak"] = bool(self.teacher_competence.get("weak", False))
        path = self.out_dir / f"circuit_step_{step}.json"
        path.write_text(json.dumps(record, indent=1))
        if circuit is not None:
            teacher = self.teacher_side["circuit"]
            print(f"[circuit] step {step}: student {circuit.summary}; teacher "
                  f"{teacher.summary if teacher.empty else f'{len(teacher.nodes)} nodes'} "
                  f"[{time.perf_counter() - start:.1f}s]")
        logger = trainer.logger
        if logger is None or not hasattr(logger, "experiment"):
            return
        if circuit is not None:
            metrics = {f"circuit/{self.prefix}student_nodes": len(circuit.nodes),
                       f"circuit/{self.prefix}student_completeness": circuit.completeness,
                       "circuit/teacher_nodes": len(self.teacher_side["circuit"].nodes)}
            if circuit.edges_pruned:
                metrics[f"circuit/{self.prefix}student_edges"] = len(circuit.edges)
            logger.log_metrics(metrics, step=step)
        import wandb

        artifact = wandb.Artifact(f"circuit-{self.student_name or logger.experiment.name}", type="circuit",
                                  metadata={"step": step})
        artifact.add_file(str(path))
        artifact.add_file(str(self.out_dir / f"step_{step}.json"))
        logger.experiment.log_artifact(artifact)

    def on_train_start(self, trainer, pl_module) -> None:
        self._analyse(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every > 0 and trainer.global_step % self.every == 0:
            self._analyse(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if step not in self.done:
            self._analyse(trainer, pl_module, final=True)
        elif trainer.is_global_zero and self.circuits and not (
                self.circuit_every and step % self.circuit_every == 0):
            self._circuits(trainer, step, self.last_student)  # analysed, but no circuit yet
            self._timeline(trainer, step)
