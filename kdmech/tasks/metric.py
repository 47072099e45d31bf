"""The task metric read at the prediction position (docs/method.md §1).

Most tasks use the logit difference logit(correct) − logit(incorrect). Greater-than uses the
probability difference Σ p(years > XX) − Σ p(years ≤ XX) over the two-digit year tokens. A prompt
set names its metric; every path that scores a model (the engines, the reference ablation, the
filter) calls `task_metric`, so ablations and influence mean the same thing for every task.
"""

from __future__ import annotations

import torch

from kdmech.tasks.prompt_set import PromptSet


def task_metric(logits: torch.Tensor, prompts: PromptSet, rows: slice | None = None) -> torch.Tensor:
    """Per-prompt metric from logits [n, V] at the prediction positions of `prompts[rows]`
    (`rows` also accepts stacked copies: logits may hold k·n rows for k copies)."""
    answers = prompts.answers if rows is None else prompts.answers[rows]
    wrongs = prompts.wrong_answers if rows is None else prompts.wrong_answers[rows]
    reps = logits.shape[0] // answers.shape[0]
    if prompts.metric == "greater_than":
        years = prompts.year_ids
        thresholds = (prompts.thresholds if rows is None else prompts.thresholds[rows]).repeat(reps)
        p = logits.float().softmax(-1)[:, years]  # [n, 100]: p of 00..99
        above = torch.arange(100, device=logits.device)[None, :] > thresholds[:, None]
        return (p * above).sum(-1) - (p * ~above).sum(-1)
    idx = torch.arange(logits.shape[0], device=logits.device)
    # float32 from bf16 logits (kdmech analyze --analysis.dtype bfloat16); a no-op in float32
    return logits[idx, answers.repeat(reps)].float() - logits[idx, wrongs.repeat(reps)].float()
