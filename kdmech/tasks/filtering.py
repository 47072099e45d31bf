"""Scoring a plain Hugging Face model on a prompt set, and the teacher prompt filter (SPEC §2):
keep a prompt only if the teacher's top-1 is the correct token and p(correct) > 2·p(incorrect)."""

from __future__ import annotations

import torch

from kdmech.errors import KdmechError
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


def accuracy_and_ld(model, prompts: PromptSet) -> dict[str, float]:
    logits = model_logits(model, prompts)
    rows = torch.arange(len(prompts))
    ld = logits[rows, prompts.answers] - logits[rows, prompts.wrong_answers]
    return {"top1": (logits.argmax(-1) == prompts.answers).float().mean().item(),
            "logit_diff": ld.mean().item(), "n": len(prompts)}


def filter_by_teacher(model, prompts: PromptSet) -> PromptSet:
    probs = model_logits(model, prompts).softmax(-1)
    rows = torch.arange(len(prompts))
    p_ans, p_wrong = probs[rows, prompts.answers], probs[rows, prompts.wrong_answers]
    keep = ((probs.argmax(-1) == prompts.answers) & (p_ans > 2 * p_wrong)).nonzero().flatten()
    if keep.numel() == 0:
        raise KdmechError(f"the teacher solves none of the {len(prompts)} {prompts.task!r} prompts "
                          f"(top-1 correct and p(correct) > 2·p(wrong)); train it longer or "
                          f"turn the filter off")
    return prompts.subset(keep.tolist())
