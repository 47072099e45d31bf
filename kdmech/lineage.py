"""How the W&B runs of one study belong together: one group per quickstart, sweep or
distill-shared run (the run folder's name, or the sweep's), a job type per role (teacher,
student, analyze, report), and the teacher → student lineage as model artifacts: the teacher
run logs `teacher-<group>`, each student run uses it (online: W&B refuses `use_artifact`
offline, so there the student artifact's metadata names the teacher artifact instead) and logs
its own model as `student-<group>-<student>`."""

from __future__ import annotations

from pathlib import Path

from kdmech.tracking import JournaledWandbLogger, artifact_name
from kdmech.run_layout import EVAL_JSON


ARTIFACT = "wandb-artifact://"
"""A teacher given as a W&B artifact (as kdmech.teacher reads it)."""


def study_group(root: str | Path) -> str:
    """The W&B group of every run a run folder holds: the folder's name."""
    return Path(root).resolve().name


def teacher_artifact(group: str) -> str:
    return artifact_name(f"teacher-{group}")


def student_artifact(group: str, student: str) -> str:
    return artifact_name(f"student-{group}-{student}")


def teacher_ref(logger, teacher: str) -> str | None:
    """The model artifact of `teacher` in this run's project: a `wandb-artifact://` teacher is
    that artifact; a kdmech tiny teacher (a folder with eval.json) is its study's
    `teacher-<group>:latest`; a hub model has none."""
    if teacher.startswith(ARTIFACT):
        return teacher[len(ARTIFACT):]
    if (Path(teacher) / EVAL_JSON).exists():
        return f"{teacher_artifact(logger.experiment.group or '')}:latest"
    return None


def use_teacher(logger, teacher: str) -> None:
    """Link the student run to its teacher's model artifact (online; see the module docstring)."""
    if isinstance(logger, JournaledWandbLogger):
        ref = teacher_ref(logger, teacher)
        if ref is not None:
            logger.use_model(ref)


def log_model(logger, name: str, folder: Path, step: int, metadata: dict) -> None:
    """The saved model folder `folder` as the model artifact `name`."""
    if isinstance(logger, JournaledWandbLogger):
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
        logger.log_files_artifact(name, "model", files, step, metadata)


def log_student(logger, student: str, folder: Path, step: int, teacher: str) -> None:
    """A trained student as `student-<group>-<student>`, its metadata naming the teacher."""
    if isinstance(logger, JournaledWandbLogger):
        group = logger.experiment.group or ""
        log_model(logger, student_artifact(group, student), folder, step,
                  {"student": student, "teacher": teacher, "teacher_artifact": teacher_ref(logger, teacher)})
