"""Scoring a plain Hugging Face model on a prompt set, and the teacher prompt filter (docs/method.md §2.6):
keep a prompt only if the teacher's top-1 is the correct token and p(correct) > 2·p(incorrect)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kdmech.errors import KdmechError
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet, batch_rows


@torch.no_grad()
def model_logits(model, prompts: PromptSet, batch_size: int = 128) -> torch.Tensor:
    """Logits [N, V] at the prediction positions, from the model's own forward (on the
    model's device)."""
    model.eval()
    prompts = prompts.for_model(model)
    out = []
    for i in range(0, len(prompts), batch_size):
        logits = model(input_ids=prompts.clean[i:i + batch_size]).logits
        out.append(logits[torch.arange(logits.shape[0], device=logits.device),
                               prompts.positions[i:i + batch_size]])
    return torch.cat(out)


def _correct(logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """Top-1 correct: the answer token; for greater-than, the most likely year ending is
    above the threshold."""
    if prompts.metric == "greater_than":
        return logits[:, prompts.year_ids].argmax(-1) > prompts.thresholds
    return logits.argmax(-1) == prompts.answers


def accuracy_and_ld(model, prompts: PromptSet, max_batch_tokens: int = 0) -> dict[str, float]:
    """Top-1 accuracy and the mean task metric ("logit_diff" in the result for every task);
    `max_batch_tokens`: the analyses' memory budget (`AnalysisOptions.max_batch_tokens`)."""
    prompts = prompts.for_model(model)
    logits = model_logits(model, prompts, batch_rows(max_batch_tokens, prompts.seq_len, 128))
    return {"top1": _correct(logits, prompts).float().mean().item(),
            "logit_diff": task_metric(logits, prompts).mean().item(), "n": len(prompts),
            "metric": prompts.metric}


def kept_by_teacher(logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """Indices of the prompts the teacher solves: top-1 correct and p(correct) > 2·p(wrong)
    (greater-than: more probability above the threshold than below)."""
    if prompts.metric == "greater_than":  # more probability above the threshold than below
        keep = (_correct(logits, prompts) & (task_metric(logits, prompts) > 0)).nonzero().flatten()
    else:
        probs = logits.softmax(-1)
        rows = torch.arange(len(prompts), device=logits.device)
        p_ans, p_wrong = probs[rows, prompts.answers], probs[rows, prompts.wrong_answers]
        keep = (_correct(logits, prompts) & (p_ans > 2 * p_wrong)).nonzero().flatten()
    return keep


def filter_by_teacher(model, prompts: PromptSet) -> PromptSet:
    """The prompts the teacher solves (`kept_by_teacher`), on the device they came on."""
    keep = kept_by_teacher(model_logits(model, prompts), prompts.for_model(model))
    if keep.numel() == 0:
        raise KdmechError(f"the teacher solves none of the {len(prompts)} {prompts.task!r} prompts "
                          f"(top-1 correct and p(correct) > 2·p(wrong)); train it longer or "
                          f"turn the filter off")
    return prompts.subset(keep.tolist())


@dataclass(frozen=True)
class TeacherCompetence:
    """How well the teacher does the analysis task, measured before anything is analysed."""

    task: str
    top1: float
    """Top-1 accuracy on every analysis prompt (before the filter)."""
    n_prompts: int
    n_kept: int
    """Prompts that survive the teacher filter."""
    min_top1: float
    min_prompts: int

    @property
    def weak(self) -> bool:
        return self.top1 < self.min_top1 or self.n_kept < self.min_prompts

    def shortfalls(self) -> list[str]:
        out = []
        if self.top1 < self.min_top1:
            out.append(f"top-1 {self.top1:.3f} on {self.task!r} is below {self.min_top1:g} "
                       f"(by {self.min_top1 - self.top1:.3f})")
        if self.n_kept < self.min_prompts:
            out.append(f"{self.n_kept} of {self.n_prompts} prompts survive the teacher filter, "
                       f"fewer than min_prompts {self.min_prompts} (by {self.min_prompts - self.n_kept})")
        return out

    def to_json(self) -> dict:
        return {**asdict(self), "weak": self.weak}


def competent_prompts(model, prompts: PromptSet, min_top1: float = 0.9, min_prompts: int = 64,
                      allow_weak: bool = False, filter_prompts: bool = True,
                      who: str = "teacher", max_batch_tokens: int = 0) -> tuple[PromptSet, TeacherCompetence]:
    """The competence gate before any analysis: the teacher's top-1 on the task and the prompts
    that survive its filter. A teacher below either bar is refused in one line (a KdmechError)
    unless `allow_weak`; then the caller marks its outputs `teacher_weak`. The prompts come
    back on the device they came on. `max_batch_tokens`: the analyses' memory budget
    (`AnalysisOptions.max_batch_tokens`) holds for the teacher's forwards here too."""
    on_model = prompts.for_model(model)
    logits = model_logits(model, on_model, batch_rows(max_batch_tokens, on_model.seq_len, 128))
    keep = kept_by_teacher(logits, on_model)
    n_kept = keep.numel() if filter_prompts else len(prompts)
    competence = TeacherCompetence(prompts.task, _correct(logits, on_model).float().mean().item(),
                                   len(prompts), n_kept, min_top1, min_prompts)
    if competence.weak and not allow_weak:
        raise KdmechError(f"{who} not analysed: " + "; ".join(competence.shortfalls())
                          + "; train it longer, or pass --analysis.allow_weak_teacher to analyse "
                            "it anyway (every output is then marked teacher_weak)")
    if not filter_prompts:
        return prompts, competence
    if keep.numel() == 0:
        raise KdmechError(f"the {who} solves none of the {len(prompts)} {prompts.task!r} prompts "
                          f"(top-1 correct and p(correct) > 2·p(wrong)); nothing to analyse")
    return prompts.subset(keep.tolist()), competence
