"""Plain Hugging Face helpers the oracle tests share: hooks removed on exit, an RMSNorm by hand
and the mean logit difference of a causal LM read straight from its logits (no kdmech code)."""

from contextlib import contextmanager

import torch


@contextmanager
def hooked(*handles):
    """Run the block with `handles` (torch hook handles) registered; remove them after."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def rms_norm(norm, x):
    """An RMSNorm applied by hand (weight · x / sqrt(mean(x²) + eps))."""
    return norm.weight * (x / (x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt())


def mean_ld(model, prompts) -> float:
    """Mean logit difference (answer − wrong answer) at each prompt's read-out position."""
    with torch.no_grad():
        logits = model(input_ids=prompts.clean).logits
    rows = torch.arange(len(prompts))
    at = logits[rows, prompts.positions]
    return (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()
