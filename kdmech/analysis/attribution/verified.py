"""A circuit from attribution scores, verified by exact ablation (docs/method.md §5.5).

1. Nodes are ranked by score, most negative first (the largest estimated drop of the metric
   when the node is ablated).
2. Candidate: the shortest prefix of that ranking that keeps ≥ (1 − T)·LD_full by exact
   ablation (every node outside it ablated with the engine's kind). Prefix lengths 1, 2, 4, …
   are tried until one keeps enough (the whole model always does), then the length is bisected
   between the last that failed and the first that passed, each length checked exactly.
3. Exact pruning (§5.1) starts from the candidate instead of the whole model: passes alternate
   until one removes nothing, so every kept node is necessary and the circuit keeps ≥ (1 − T) —
   the definition exact pruning meets.
4. Edges (additive families): the node circuit's edges are scored on the circuit state (§5.2's
   baseline, senders moving to their paired corrupted outputs): est_e = baseline + s_e, the
   estimated patched metric. They are ranked by est_e, lowest first, and path-patched exactly
   `EDGE_ROUND` at a time (one circuit state for all rounds); an edge is kept when its exact
   path patch leaves the metric below limit = (1 − T)·LD_full (§5.2's rule). After each round
   the margin m = max over checked edges of |est_e − exact_e| — the worst error of attribution
   so far, either way — is updated, and checking stops once the lowest unchecked estimate
   satisfies est − m ≥ limit: no edge left would be kept even if its estimate were as wrong as
   the worst one checked. When estimates are poor m grows and every edge is checked (then the
   edge list is exactly §5.2's).

Completeness and faithfulness are exact.
"""

from __future__ import annotations

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.attribution.paths import edge_attribution
from kdmech.analysis.attribution.scores import AttributionScores
from kdmech.analysis.circuit import EDGES, Circuit, PathPatcher, measured_circuit, prune_nodes, retained_with_only
from kdmech.analysis.edges import Edge
from kdmech.analysis.nodes import Node

EDGE_ROUND = 16
"""Edges path-patched per round of edge verification."""


def ranked(scores: AttributionScores) -> list[Node]:
    """Nodes by score, most negative first (ties: node order)."""
    order = sorted(range(len(scores.nodes)), key=lambda i: (scores.node_scores[i].item(), i))
    return [scores.nodes[i] for i in order]


def shortest_prefix(engine: AblationEngine, order: list[Node], threshold: float) -> tuple[set[Node], int]:
    """The shortest prefix of `order` keeping ≥ (1 − T) found by doubling then bisection (see
    module docstring), and how many prefixes were checked exactly."""
    keep = 100.0 * (1 - threshold)
    n, checks = len(order), 0

    def passes(k: int) -> bool:
        nonlocal checks
        checks += 1
        return retained_with_only(engine, set(order[:k])) >= keep

    lo, hi = 0, 1
    while hi < n and not passes(hi):
        lo, hi = hi, min(2 * hi, n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return set(order[:hi]), checks


def verify_edges(engine: AblationEngine, circuit: set[Node], scores: AttributionScores,
                 threshold: float, sender_source: str = "intact") -> tuple[list[Edge], int, float]:
    """Edges kept by exact path patching, checked in attribution order until the stopping rule
    (module docstring, 4) holds: (kept edges, edges checked, the calibrated margin)."""
    limit = (1 - threshold) * engine.full_metric
    patcher = PathPatcher(engine, circuit, sender_source)
    estimated = {e: patcher.baseline + s for e, s in scores.edges(circuit, patcher.receivers).items()}
    order = sorted(estimated, key=lambda e: (estimated[e], e.sender, e.receiver))
    kept, checked, margin = [], 0, 0.0
    while checked < len(order):
        batch = order[checked:checked + EDGE_ROUND]
        exact = patcher.score(batch)
        checked += len(batch)
        kept += [e for e in batch if exact[e] < limit]
        margin = max(margin, *(abs(estimated[e] - exact[e]) for e in batch))
        if checked < len(order) and estimated[order[checked]] - margin >= limit:
            break
    return kept, checked, margin


def verified_circuit(engine: AblationEngine, scores: AttributionScores, threshold: float = 0.20,
                     edges: bool = True, progress=None, adapter=None, sender_source: str = "intact") -> Circuit:
    """The verified circuit from node scores (module docstring); its `discovery` records the
    method, the candidate size and the exact checks it took."""
    candidate, prefix_checks = shortest_prefix(engine, ranked(scores), threshold)
    visited = [0]

    def count(k):
        visited[0] += k
        if progress:
            progress(k)

    nodes, passes = prune_nodes(engine, threshold, progress=count, start=candidate)
    refused = engine.residual_refusal(EDGES) if edges else ""
    if refused == "" and edges and adapter is not None and not adapter.edges:
        refused = engine.family.refusal("edge attribution")
    pruned = edges and not refused
    edge_list, edges_checked, margin = [], 0, 0.0
    if pruned:
        e_scores = edge_attribution(engine, nodes, scores.method, scores.ig_steps, adapter)
        edge_list, edges_checked, margin = verify_edges(engine, nodes, e_scores, threshold, sender_source)
    record = {"method": scores.method, "ig_steps": scores.ig_steps, "candidate_nodes": len(candidate),
              "prefix_checks": prefix_checks, "pruning_checks": visited[0], "edges_checked": edges_checked,
              **({"edge_margin": margin} if pruned else {})}
    return measured_circuit(engine, threshold, nodes, passes, edge_list, pruned, refused, sender_source, record)
