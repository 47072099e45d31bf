"""Single-node influence (docs/method.md §4): I_c = |100·(1 − LD_{c ablated}/LD_full)|.

Each node is ablated alone from the full model. retained% = 100·LD_ablated/LD_full.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.nodes import Node


@dataclass(frozen=True)
class Influence:
    ablation: str
    """Ablation kind used (mean, zero or resample)."""
    metric: float
    """The task metric of the intact model (LD, or greater-than's probability difference)."""
    retained: dict[str, float]
    """Percent of LD kept with the node ablated, per node name."""
    influence: dict[str, float]
    """|100 − retained|, per node name."""

    @property
    def worst(self) -> tuple[str, float]:
        """The node whose ablation moves LD the most, and by how much (percent)."""
        name = max(self.influence, key=self.influence.get)
        return name, self.influence[name]


def retained_percent(ld_ablated: float, ld_full: float) -> float:
    return 100.0 * ld_ablated / ld_full if ld_full != 0 else 0.0


def influence(engine: AblationEngine, nodes: list[Node] | None = None) -> Influence:
    """Ablate every node (or `nodes`) alone and record how much LD it keeps."""
    return influence_from_lds(*per_prompt_lds(engine, nodes))


def per_prompt_lds(engine: AblationEngine, nodes: list[Node] | None = None):
    """(kind, node names, intact per-prompt LD [N], ablated per-prompt LDs [n_nodes, N])."""
    nodes = nodes or engine.bridged.nodes
    lds = engine.metrics([[], *([node] for node in nodes)], per_prompt=True)
    return engine.kind.value, [n.name for n in nodes], lds[0], torch.stack(lds[1:])


def influence_from_lds(kind: str, names: list[str], full: torch.Tensor, ablated: torch.Tensor,
                       rows=None) -> Influence:
    """Influence from per-prompt LDs, optionally over a resample `rows` of the prompts."""
    if rows is not None:
        full, ablated = full[rows], ablated[:, rows]
    ld_full = full.mean().item()
    means = ablated.mean(1).tolist()
    retained = {n: retained_percent(ld, ld_full) for n, ld in zip(names, means)}
    return Influence(kind, ld_full, retained, {k: abs(100.0 - v) for k, v in retained.items()})
