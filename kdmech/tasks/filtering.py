"""Scoring a plain Hugging Face model on a prompt set, and the teacher prompt filter (SPEC §2):
keep a prompt only if the teacher's top-1 is the correct token and p(correct) > 2·p(incorrect)."""

from __future__ import annotations

import torch

from kdmech.errors import KdmechError
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet


@torch.no_grad()
def model_logits(model, prompts: PromptSet, batch_size: int = 128) -> torch.Tensor:
    """Logits [N, V] at the prediction positions, from the model's own forward."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        logits = model(input_ids=prompts.clean[i:i + batch_size]).logits
        out.append(logits[torch.arange(logits.shape[0]), prompts.positions[i:i + batch_size]])
    return torch.cat(out)


def _correct(logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """Top-1 correct: the answer token; for greater-than, the most likely year ending is
    above the threshold."""
    if prompts.metric == "greater_than":
        return logits[:, prompts.year_ids].argmax(-1) > prompts.thresholds
    return logits.argmax(-1) == prompts.answers


def accuracy_and_ld(model, prompts: PromptSet) -> dict[str, float]:
    """Top-1 accuracy and the mean task metric ("logit_diff" in the result for every task)."""
    logits = model_logits(model, prompts)
    return {"top1": _correct(logits, prompts).float().mean().item(),
            "logit_diff": task_metric(logits, prompts).mean().item(), "n": len(prompts),
            "metric": prompts.metric}


def filter_by_teacher(model, prompts: PromptSet) -> PromptSet:
    logits = model_logits(model, prompts)
    if prompts.metric == "greater_than":  # more probability above the threshold than below
        keep = (_correct(logits, prompts) & (task_metric(logits, prompts) > 0)).nonzero().flatten()
    else:
        probs = logits.softmax(-1)
        rows = torch.arange(len(prompts))
        p_ans, p_wrong = probs[rows, prompts.answers], probs[rows, prompts.wrong_answers]
        keep = (_correct(logits, prompts) & (p_ans > 2 * p_wrong)).nonzero().flatten()
    if keep.numel() == 0:
        raise KdmechError(f"the teacher solves none of the {len(prompts)} {prompts.task!r} prompts "
                          f"(top-1 correct and p(correct) > 2·p(wrong)); train it longer or "
                          f"turn the filter off")
    return prompts.subset(keep.tolist())
