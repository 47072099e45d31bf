"""Single-node influence (SPEC §4): I_c = |100·(1 − LD_{c ablated}/LD_full)|.

Each node is ablated alone from the full model. retained% = 100·LD_ablated/LD_full.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdmech.analysis.ablation import AblationKind, CorruptedActivations, ablated_logit_diff
from kdmech.analysis.bridge import Bridged
from kdmech.analysis.nodes import Node
from kdmech.tasks.prompt_set import PromptSet


@dataclass(frozen=True)
class Influence:
    ablation: str
    """Ablation kind used (mean, zero or resample)."""
    logit_diff: float
    """LD of the intact model."""
    retained: dict[str, float]
    """Percent of LD kept with the node ablated, per node name."""
    influence: dict[str, float]
    """|100 − retained|, per node name."""

    @property
    def worst(self) -> tuple[str, float]:
        """The node whose ablation moves LD the most, and by how much (percent)."""
        name = max(self.influence, key=self.influence.get)
        return name, self.influence[name]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Influence":
        return cls(**d)


def retained_percent(ld_ablated: float, ld_full: float) -> float:
    return 100.0 * ld_ablated / ld_full if ld_full != 0 else 0.0


def influence(bridged: Bridged, prompts: PromptSet, ld_full: float,
              kind: AblationKind = AblationKind.MEAN,
              source: CorruptedActivations | None = None,
              nodes: list[Node] | None = None) -> Influence:
    """Ablate every node (or `nodes`) alone and record how much LD it keeps."""
    retained = {}
    for node in nodes or bridged.nodes:
        ld = ablated_logit_diff(bridged, prompts, [node], kind, source)
        retained[node.name] = retained_percent(ld, ld_full)
    return Influence(AblationKind(kind).value, ld_full, retained,
                     {k: abs(100.0 - v) for k, v in retained.items()})
