"""Everything one model contributes to a teacher–student comparison, computed in one place:
intact LD, single-node influence, mean head patterns and MLP outputs on the clean prompts.

A teacher's profile does not change during distillation, so it is computed once and reused
at every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdmech.analysis.ablation import AblationKind, corrupted_activations
from kdmech.analysis.bridge import Bridged, boot
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.influence import Influence, influence_from_lds, per_prompt_lds
from kdmech.analysis.nodes import Node
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet, batch_rows


@dataclass
class ModelProfile:
    influence: Influence
    patterns: torch.Tensor
    """Mean attention pattern per head over the clean prompts, [L, H, T, T]."""
    mlp_out: torch.Tensor
    """MLP outputs over all clean prompts and positions, [L, N·T, d]."""
    nodes: list[Node]
    engine: AblationEngine | None = None
    """The ablation engine behind the numbers, for further analyses on the same model."""
    lds: tuple | None = None
    """Per-prompt LDs behind `influence` (for bootstrap CIs over prompts)."""

    @property
    def metric(self) -> float:
        """The intact model's task metric on the prompts."""
        return self.influence.metric


def _pattern_or_mlp(name: str) -> bool:
    return name.endswith("attn.hook_pattern") or name.endswith("hook_mlp_out")


@torch.no_grad()
def clean_run(bridged: Bridged, prompts: PromptSet, batch_size: int = 64):
    """(per-prompt LD [N], mean patterns [L, H, T, T], MLP outputs [L, N·T, d])."""
    lds, pattern_sum, mlps = [], None, [[] for _ in range(bridged.n_layers)]
    for i in range(0, len(prompts), batch_size):
        sl = slice(i, i + batch_size)
        logits, cache = bridged.bridge.run_with_cache(prompts.clean[sl], names_filter=_pattern_or_mlp,
                                                      **bridged.forward_kwargs(prompts.clean[sl]))
        at = logits[torch.arange(logits.shape[0], device=logits.device), prompts.positions[sl]]
        lds.append(task_metric(at, prompts, rows=sl))
        pats = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"].float().sum(0)  # float32 under bf16
                            for l in range(bridged.n_layers)])
        pattern_sum = pats if pattern_sum is None else pattern_sum + pats
        for l in range(bridged.n_layers):
            mlps[l].append(cache[f"blocks.{l}.hook_mlp_out"].flatten(0, 1))
    return (torch.cat(lds), pattern_sum / len(prompts),
            torch.stack([torch.cat(m) for m in mlps]))


def profile(model, tokenizer, prompts: PromptSet,
            ablation: AblationKind = AblationKind.MEAN, keep_corrupted: bool = False,
            max_batch_tokens: int = 0) -> ModelProfile:
    """`keep_corrupted`: keep the corrupted run's activations row by row (not only their
    means), for path patching on the same engine (circuits): the one corrupted run then
    serves both, where the engine would otherwise repeat it (the same function on the same
    prompts, so the same numbers). `max_batch_tokens`: no forward of this profile, nor of
    its engine later, takes more than max(1, max_batch_tokens // seq_len) prompt rows (0:
    no budget; `AnalysisOptions.max_batch_tokens`)."""
    prompts = prompts.for_model(model)  # everything below runs on the model's device
    bridged = boot(model, tokenizer)
    ablation = AblationKind(ablation)
    rows = batch_rows(max_batch_tokens, prompts.seq_len, 64)
    source = (None if ablation is AblationKind.ZERO else
              corrupted_activations(bridged, prompts,
                                    keep_full=ablation is AblationKind.RESAMPLE or keep_corrupted,
                                    batch_size=rows))
    _, patterns, mlp_out = clean_run(bridged, prompts, batch_size=rows)
    engine = AblationEngine(bridged, prompts, ablation, source, max_batch_tokens=max_batch_tokens)
    lds = per_prompt_lds(engine)
    return ModelProfile(influence_from_lds(*lds), patterns, mlp_out, bridged.nodes, engine, lds)
