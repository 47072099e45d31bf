"""The Lightning adapter of the checkpoint analysis: when to analyse, where the student is,
where results go. What is computed lives in `kdmech.analysis.checkpoint`; where files go in
`RunLayout`; what W&B receives in `kdmech.tracking.WandbSink`."""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor

import lightning as L

from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint, circuit_record
from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.record import forget_steps
from kdmech.analysis.restructuring import append_history
from kdmech.report.heatmap import save_influence_png
from kdmech.report.timeline import picture_paths, student_timeline
from kdmech.run_layout import RunLayout
from kdmech.tasks.prompt_set import PromptSet
from kdmech.tracking import WandbSink


class CircuitAnalysisCallback(L.Callback):
    """Before training, every `options.every_n_steps` optimizer steps and at the end, on rank
    0: analyse the student against the teacher (`analyze_checkpoint`), save the record in the
    run folder, append it to the history and log it. Circuits and probes run every
    `options.circuit_every_n_steps` steps (0 = only at the end); the timeline pictures are
    drawn once, at the end.

    A run that starts at step k (fresh: 0; resumed from a checkpoint: its step) first forgets
    what the folder holds for steps ≥ k and analyses them again: analyses are deterministic, so
    a resumed run's history holds every step once, with an uninterrupted run's numbers.

    The LightningModule needs one attribute: `student` (the HF model being trained), or
    `student_named(name)` when it trains several. Students of one teacher on one prompt set
    pass one `teacher_side` dict, so the teacher is profiled once; a later run of the same
    teacher reads it from disk (kdmech.analysis.teacher_cache)."""

    def __init__(self, teacher, tokenizer, prompts: PromptSet, layout: RunLayout, name: str,
                 options: AnalysisSchedule = AnalysisSchedule(), teacher_side: dict | None = None,
                 teacher_competence: dict | None = None, prefix: str = ""):
        self.teacher, self.tokenizer, self.prompts = teacher, tokenizer, prompts
        self.layout, self.name, self.options = RunLayout(layout), name, options
        self.teacher_side = teacher_side if teacher_side is not None else {}
        self.teacher_competence = teacher_competence or {}
        self.prefix = prefix
        self.sink: WandbSink | None = None
        self.last_student = None
        self.done: set[int] = set()
        self.ended = False
        """on_train_end has run (Lightning skips the training hooks of a run resumed at its end)."""
        self.results = []
        """The PairAnalysis of every checkpoint, in order."""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def _teacher(self) -> TeacherSide:
        if "side" not in self.teacher_side:
            self.teacher_side["side"] = TeacherSide.load_or_build(
                self.teacher, self.tokenizer, self.prompts, self.options, self.teacher_competence)
        return self.teacher_side["side"]

    def _student(self, pl_module):
        find = getattr(pl_module, "student_named", None)
        return find(self.name) if find is not None and self.prefix else pl_module.student

    def _circuit_step(self, step: int, final: bool) -> bool:
        every = self.options.circuit_every_n_steps
        return self.options.circuits and (final or (every > 0 and step % every == 0))

    def _analyse(self, trainer: L.Trainer, pl_module, final: bool = False) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step in self.done:
            return
        self.done.add(step)
        if self.sink is None:
            self.sink = WandbSink(trainer.logger, self.prefix, self.prefix.rstrip("/") or None)
        self.wait()  # one analysis at a time, in step order
        student, circuits = self._student(pl_module), self._circuit_step(step, final)
        if self.options.background and not final:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="kdmech-analysis")
            # the weights of this step, while training moves on
            self._pending = self._pool.submit(self._analyse_model, copy.deepcopy(student), step, circuits)
        else:
            self._analyse_model(student, step, circuits)

    def wait(self) -> None:
        """Block until a background analysis has finished (its error is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _analyse_model(self, student, step: int, circuits: bool) -> None:
        start = time.perf_counter()
        teacher = self._teacher()
        record, self.last_student, _ = analyze_checkpoint(
            teacher, student, self.tokenizer, self.prompts, step, circuits=circuits)
        record.save(self.layout, self.name)
        r = record.pair
        png = self.layout.influence_png(self.name, step)
        save_influence_png(png, r.influence["teacher"], r.influence["student"],
                           f"{self.name}: influence at step {step}")
        append_history(self.layout, self.name, record)
        self.results.append(r)
        self.sink.checkpoint(record, png)
        print(f"[analysis] {self.prefix}step {step}: LD teacher {r.logit_diff['teacher']:.2f} "
              f"student {r.logit_diff['student']:.2f}, A {r.alignment.A:.3f}, worst drop "
              f"{r.worst_drop.student.value:.1f}% ({r.worst_drop.student.node}) "
              f"[{time.perf_counter() - start:.1f}s]")
        if record.circuits is not None:
            self._report_circuits(record.circuits, step)

    def _report_circuits(self, circuits, step: int) -> None:
        if circuits.error:
            print(f"[circuit] {self.prefix}step {step}: {circuits.error}")
        else:
            t = circuits.teacher
            print(f"[circuit] {self.prefix}step {step}: student {circuits.student.summary}; teacher "
                  f"{t.summary if t.empty else f'{len(t.nodes)} nodes'}")
        self.sink.circuits(circuits, [self.layout.circuit_json(self.name, step),
                                      self.layout.step_json(self.name, step)])

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            forget_steps(self.layout, self.name, trainer.global_step)
        self._analyse(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.options.every_n_steps
        if every > 0 and trainer.global_step % every == 0:
            self._analyse(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def on_train_end(self, trainer, pl_module) -> None:
        self.ended = True
        if not trainer.is_global_zero:
            return
        self.wait()
        step = trainer.global_step
        if step not in self.done:
            self._analyse(trainer, pl_module, final=True)
        elif self.options.circuits and not self._circuit_step(step, final=False):
            # analysed at this step, but without circuits: add them to the step's record
            circuits = circuit_record(self._teacher(), self.last_student, self.tokenizer, step)
            circuits.save(self.layout, self.name)
            self._report_circuits(circuits, step)
        timeline = student_timeline(self.layout, self.name)  # history rewritten whole once, pictures once
        self.sink.images("timeline", picture_paths(self.layout, self.name), step)
        self.sink.events(timeline["events"], step)
