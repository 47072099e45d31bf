"""How much a node circuit depends on the order pruning visits the nodes (docs/method.md §5.1).

Greedy node pruning is path-dependent: a removal changes what every later visit sees, so
another visiting order can end in another circuit that also keeps ≥ (1 − T) of LD_full. Here
node pruning (`circuit.prune_nodes`, same threshold, ablation and stopping rule) is rerun
with N random visiting orders: order i is the i-th permutation of the nodes drawn from numpy's
`default_rng(seed)`, its passes alternating that order and its reverse (as the default
alternates backward and forward). Reported: each order's circuit and completeness, how often
each node is kept, the union and the intersection of the circuits, and how many distinct
circuits came out.
"""

from __future__ import annotations

import numpy as np

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.circuit import prune_nodes, retained_with_only
from kdmech.analysis.nodes import Node


def pruning_orders(engine: AblationEngine, threshold: float = 0.20, n_orders: int = 10, seed: int = 0,
                   default: list[str] | None = None, progress=None) -> dict:
    """Node circuits from `n_orders` random visiting orders (module docstring); `default`: the
    nodes of the circuit from the default order, to say whether the random orders find it."""
    nodes = list(engine.bridged.nodes)
    rng = np.random.default_rng(seed)
    circuits = []
    for i in range(n_orders):
        order = [nodes[j] for j in rng.permutation(len(nodes))]
        kept, passes = prune_nodes(engine, threshold, order=order)
        circuits.append({"order": i, "nodes": [n.name for n in sorted(kept)], "passes": passes,
                         "completeness": retained_with_only(engine, kept)})
        if progress:
            progress(1)
    sets = [set(c["nodes"]) for c in circuits]
    names = [n.name for n in sorted(nodes)]
    frequency = {n: sum(n in s for s in sets) / len(sets) for n in names} if sets else {}
    union = set().union(*sets) if sets else set()
    inter = set.intersection(*sets) if sets else set()
    distinct = {tuple(c["nodes"]) for c in circuits}
    out = {"threshold": threshold, "n_orders": n_orders, "seed": seed,
           "order": "numpy default_rng(seed).permutation per order; passes alternate it and its reverse",
           "circuits": circuits, "node_frequency": frequency,
           "union": [n for n in names if n in union], "intersection": [n for n in names if n in inter],
           "distinct_circuits": len(distinct),
           "completeness_range": ([min(c["completeness"] for c in circuits), max(c["completeness"] for c in circuits)]
                                  if circuits else [])}
    if default is not None:
        out["default_order"] = {"nodes": sorted(default, key=Node.parse),
                                "found_by": sum(set(default) == s for s in sets)}
    return out
