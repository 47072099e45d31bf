"""Attribution scores at every checkpoint (docs/method.md §5.5, §13): which components the
student's computation leans on as training goes, at the cost of `ig_steps` forward-backward
passes per checkpoint (one for EAP) instead of one exact forward per node.

The record of one model at one step: each node's score s_n (the estimated change of the mean
task metric when the node is ablated with the analysis' kind) and the intact metric, from which
`estimated_drop` gives the % of the metric the node's ablation is estimated to remove,
−100·s_n / LD_full (positive: the node helps; the exact counterpart is 100 − retained%, §4).
It is saved in the step record (`step_<N>.json`, key "attribution"), drawn by the timeline
(`attribution_over_steps.png`) and logged to W&B (`kdmech.wandb_restructuring`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.attribution.paths import engine_adapter, node_attribution
from kdmech.errors import KdmechError

WATCH_METHODS = ("eap", "eap-ig")


def watch_method(discovery: str) -> str:
    """The method of the per-checkpoint scores: the discovery's when it is an attribution
    method, else eap-ig."""
    return discovery if discovery in WATCH_METHODS else "eap-ig"


@dataclass(frozen=True)
class NodeAttribution:
    method: str
    ig_steps: int
    metric: float
    """The model's intact mean task metric (LD_full)."""
    scores: dict[str, float] = field(default_factory=dict)
    """Node name → estimated change of the mean metric when it is ablated."""
    error: str = ""
    """Why no scores were computed (e.g. a family without an attribution adapter)."""

    def estimated_drop(self) -> dict[str, float]:
        """Node → −100·s_n / LD_full (NaN where LD_full ≤ 0: no share of a metric that is not there)."""
        return {n: (-100.0 * s / self.metric if self.metric > 0 else float("nan")) for n, s in self.scores.items()}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "NodeAttribution":
        return cls(**d)


def checkpoint_attribution(engine: AblationEngine, discovery: str = "eap-ig", ig_steps: int = 5,
                           dtype: str = "float32") -> NodeAttribution:
    """The node scores of the engine's model (its prompts and ablation kind), or why not."""
    method = watch_method(discovery)
    steps = ig_steps if method == "eap-ig" else 1
    try:
        scores = node_attribution(engine, method, ig_steps, engine_adapter(engine, dtype))
    except KdmechError as e:
        return NodeAttribution(method, steps, engine.full_metric, error=str(e))
    return NodeAttribution(method, steps, engine.full_metric, scores.by_node())
