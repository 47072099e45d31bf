"""`kdmech train-teacher`: the verb is the tiny teacher's training itself (`kdmech.teacher`),
whose signature and docstring are the command's options and help."""

from kdmech.teacher import TeacherTraining, train_teacher

__all__ = ["TeacherTraining", "train_teacher"]
