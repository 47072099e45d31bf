"""The attribution paths of circuit discovery, from an ablation engine (docs/method.md §5.5).

- nodes: from the intact model to every node ablated with the engine's kind (mean, zero or
  resample): the targets are `AblationEngine.replacement`, what exact ablation patches in;
- edges of a node circuit: the nodes outside it ablated throughout (as in path patching, §5.2),
  the circuit's nodes moving to their *paired* corrupted outputs (path patching's senders).
"""

from __future__ import annotations

import torch

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.attribution.adapter import AttributionAdapter
from kdmech.analysis.attribution.adapters import adapter_for
from kdmech.analysis.attribution.scores import AttributionScores, Path, attribute, path_points
from kdmech.analysis.nodes import Node
from kdmech.errors import KdmechError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def engine_adapter(engine: AblationEngine, dtype: str = "float32") -> AttributionAdapter:
    """The attribution adapter of the engine's model (a frozen copy, in `dtype`)."""
    if dtype not in DTYPES:
        raise KdmechError(f"attribution dtype {dtype!r} is unknown; accepted: {list(DTYPES)}")
    return adapter_for(engine.family.name, engine.bridged.model, DTYPES[dtype])


def _z(replacement):
    return lambda layer: replacement(Node(layer, 0).hook).flatten(2)


def _mlp(replacement):
    return lambda layer: replacement(Node(layer).hook)


def ablation_path(engine: AblationEngine, moving: set[Node] | None = None) -> Path:
    """Intact model → nodes ablated by the engine's kind (only `moving` ones, when given)."""
    return Path(_z(engine.replacement), _mlp(engine.replacement), moving=moving)


def circuit_edge_path(engine: AblationEngine, circuit: set[Node]) -> Path:
    """The circuit state (nodes outside `circuit` ablated) → circuit nodes at their paired
    corrupted outputs."""
    paired = engine.paired_corrupted().full
    outside = {n for n in engine.bridged.nodes if n not in circuit}
    return Path(_z(paired.__getitem__), _mlp(paired.__getitem__), outside,
                _z(engine.replacement), _mlp(engine.replacement))


def node_attribution(engine: AblationEngine, method: str = "eap-ig", ig_steps: int = 5,
                     adapter: AttributionAdapter | None = None, moving: set[Node] | None = None,
                     edges: bool = False) -> AttributionScores:
    """Every node's (and with `edges`, every edge's) score on the ablation path."""
    adapter = adapter or engine_adapter(engine)
    return attribute(adapter, engine.prompts, ablation_path(engine, moving), path_points(method, ig_steps),
                     engine.row_chunks, edges=edges, method=method)


def edge_attribution(engine: AblationEngine, circuit: set[Node], method: str = "eap-ig", ig_steps: int = 5,
                     adapter: AttributionAdapter | None = None) -> AttributionScores:
    """Edge scores of a node circuit (estimated path-patched metric − circuit baseline); only
    the layers holding a circuit head have their attention inputs as receivers (the others
    receive no edge of the circuit)."""
    adapter = adapter or engine_adapter(engine)
    if not adapter.edges:
        raise KdmechError(engine.family.refusal("edge attribution"))
    return attribute(adapter, engine.prompts, circuit_edge_path(engine, circuit),
                     path_points(method, ig_steps), engine.row_chunks, edges=True, method=method,
                     attention_layers={n.layer for n in circuit if n.is_head})
