"""Node ablation (docs/method.md §3).

A head is ablated by replacing its slice of `hook_z` (its output before W_O); an MLP by
replacing the block's MLP output. Sequence positions and residual-stream slices are never
zeroed. The replacement depends on the `AblationKind`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import Enum

import torch

from kdmech.analysis.bridge import Bridged, logits_at
from kdmech.analysis.nodes import Node
from kdmech.analysis.vocabulary import Ablation, choices
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet


class AblationKind(str, Enum):
    MEAN = "mean"
    """Per-position mean of the activation over the corrupted prompt set (the default)."""
    ZERO = "zero"
    """All zeros."""
    RESAMPLE = "resample"
    """The activation the paired corrupted prompt produces."""


assert tuple(k.value for k in AblationKind) == choices(Ablation)  # one vocabulary


def _ablated_hook(name: str) -> bool:
    return name.endswith("attn.hook_z") or name.endswith("hook_mlp_out")


def row_chunks(n: int, rows: int) -> list[slice]:
    """Consecutive slices of at most `rows` of n prompt rows (one slice when rows ≥ n)."""
    return [slice(i, min(i + rows, n)) for i in range(0, n, max(1, rows))]


@dataclass
class CorruptedActivations:
    """What ablations patch in, from one run over the corrupted prompts. `means[h]` has
    shape [T, ...]; `full[h]` ([N, T, ...]) is kept only for resample ablation."""

    means: dict[str, torch.Tensor]
    full: dict[str, torch.Tensor] | None = None


@torch.no_grad()
def corrupted_activations(bridged: Bridged, prompts: PromptSet, keep_full: bool = False,
                          batch_size: int = 64) -> CorruptedActivations:
    sums: dict[str, torch.Tensor] = {}
    full: dict[str, list] = defaultdict(list)
    for i in range(0, len(prompts), batch_size):
        ids = prompts.corrupted[i:i + batch_size]
        _, cache = bridged.bridge.run_with_cache(ids, names_filter=_ablated_hook,
                                                 **bridged.forward_kwargs(ids))
        for name in cache.keys():
            act = cache[name]
            sums[name] = sums.get(name, 0) + act.sum(0)
            if keep_full:
                full[name].append(act)
    means = {k: v / len(prompts) for k, v in sums.items()}
    return CorruptedActivations(means, {k: torch.cat(v) for k, v in full.items()} if keep_full else None)


def zero_replacement(act: torch.Tensor, hook_name: str, value_bias: list | None) -> torch.Tensor:
    """What zero ablation writes: zeros, or for a head (`hook_z`, [..., heads, d_head]) its
    value bias when `value_bias` (per layer [heads, d_head]; `ablation.value_bias`) is given."""
    new = torch.zeros_like(act)
    if value_bias is not None and hook_name.endswith("attn.hook_z"):
        layer = int(hook_name.split(".")[1])
        new[:] = value_bias[layer].to(new)
    return new


def ablation_hooks(nodes: list[Node], kind: AblationKind, source: CorruptedActivations | None,
                   value_bias: list | None = None):
    """Hook factories for `logits_at`: each takes the batch slice and returns a TL hook.
    `value_bias`: zero ablation keeps each head's value bias (`zero_replacement`)."""
    kind = AblationKind(kind)
    by_hook: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        by_hook[node.hook].append(node)

    def factory(hook_name: str, group: list[Node]):
        heads = [n.head for n in group if n.is_head]

        def make(sl: slice):
            def hook(act, hook):
                if kind is AblationKind.ZERO:
                    new = zero_replacement(act, hook_name, value_bias)
                elif kind is AblationKind.MEAN:
                    new = source.means[hook_name].expand_as(act)
                else:
                    new = source.full[hook_name][sl]
                act = act.clone()
                if heads:
                    act[:, :, heads] = new[:, :, heads]
                else:
                    act[:] = new
                return act
            return hook
        return make

    return [(name, factory(name, group)) for name, group in by_hook.items()]


def ablated_metric(bridged: Bridged, prompts: PromptSet, nodes: list[Node],
                   kind: AblationKind = AblationKind.MEAN,
                   source: CorruptedActivations | None = None, batch_size: int = 64,
                   value_bias: list | None = None) -> torch.Tensor:
    """Per-prompt task metric (LD for most tasks) with every node in `nodes` ablated at once:
    one plain full forward (`batch_size` prompts at a time), the reference every faster path
    is tested against. `value_bias`: zero ablation keeps each head's value bias."""
    hooks = ablation_hooks(nodes, kind, source, value_bias) if nodes else []
    return task_metric(logits_at(bridged, prompts.clean, prompts.positions, hooks, batch_size), prompts)


def ablated_metric_mean(bridged: Bridged, prompts: PromptSet, nodes: list[Node],
                       kind: AblationKind = AblationKind.MEAN,
                       source: CorruptedActivations | None = None) -> float:
    """Mean of `ablated_metric` over the clean prompts."""
    return ablated_metric(bridged, prompts, nodes, kind, source).mean().item()
