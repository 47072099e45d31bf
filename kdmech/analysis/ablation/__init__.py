"""Node ablation (docs/method.md §3): the plain reference, the engine that gives its numbers
faster, the contract the engine holds its families' fast runners to, and their registry.

- `reference`: one full bridge forward per ablation set; what every faster path is tested against.
- `engine`: `AblationEngine`, exact LDs for many ablation sets (strategy picked once).
- `contract`: the `Runner` / `ResidualRunner` protocols; `run_state`: a runner's cached forward.
- `runners`: the registry (family name → runner factory); `gpt2_runner`, `bert_runner`.
"""

from kdmech.analysis.ablation.engine import AblationEngine, Strategy, chunked_metric
from kdmech.analysis.ablation.reference import (AblationKind, CorruptedActivations, ablated_metric,
                                                ablated_metric_mean, ablation_hooks, corrupted_activations,
                                                row_chunks)

__all__ = ["AblationEngine", "AblationKind", "CorruptedActivations", "Strategy", "ablated_metric",
           "ablated_metric_mean", "ablation_hooks", "chunked_metric", "corrupted_activations", "row_chunks"]
