"""Circuit discovery by the method asked for (`--analysis.discovery`, docs/method.md §5.5).

- `exact`: greedy exact pruning (§5.1, §5.2), one forward per node visit and per edge;
- `eap`, `eap-ig`: attribution scores, then the circuit they rank verified exactly
  (`verified.verified_circuit`);
- `auto`: `eap-ig` when exact discovery would take more than `AUTO_EXACT_FORWARDS` forwards by
  `estimated_exact_forwards`, else `exact`.

With `exact_agreement`, a circuit found by attribution is compared with exact pruning's at the
same threshold (which this then also runs): the Jaccard index of their nodes and of their edges.
"""

from __future__ import annotations

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.attribution.agreement import jaccard, rank_agreement
from kdmech.analysis.attribution.paths import engine_adapter, node_attribution
from kdmech.analysis.attribution.verified import verified_circuit
from kdmech.analysis.circuit import Circuit, discover, require_positive_metric
from kdmech.analysis.influence import Influence

AUTO_EXACT_FORWARDS = 1000
"""`auto` takes eap-ig above this many estimated exact forwards."""


def estimated_exact_forwards(n_layers: int, n_heads: int, edges: bool) -> int:
    """Exact discovery's forwards, estimated: three pruning passes over every node, and with
    edges, path patching of a circuit of a third of the nodes (each of its senders into half of
    its receivers: q, k, v of its heads, its MLPs, the final residual)."""
    nodes = n_layers * (n_heads + 1)
    estimate = 3 * nodes
    if edges:
        circuit = nodes / 3
        receivers = 3 * n_heads * n_layers / 3 + n_layers / 3 + 1
        estimate += int(circuit * receivers / 2)
    return estimate


def resolve(method: str, n_layers: int, n_heads: int, edges: bool) -> str:
    """The method `auto` stands for on a model of this shape (others: themselves)."""
    if method != "auto":
        return method
    return "eap-ig" if estimated_exact_forwards(n_layers, n_heads, edges) > AUTO_EXACT_FORWARDS else "exact"


class CircuitFinder:
    """`finder(engine, threshold, edges, progress) → Circuit` by `method`; the attribution
    scores of an engine are computed once and serve every threshold. With the engine's exact
    single-node `influence` (a profile has it), the circuit's `discovery` records their rank
    agreement; with `exact_agreement`, its Jaccard index with exact pruning's circuit."""

    def __init__(self, method: str = "exact", ig_steps: int = 5, dtype: str = "float32",
                 influence: dict | None = None, sender_source: str = "intact",
                 exact_agreement: bool = False):
        self.method, self.ig_steps, self.dtype = method, ig_steps, dtype
        self.sender_source = sender_source
        """Path patching's sender activations (`circuit.path_patching`)."""
        self.exact_agreement = exact_agreement
        self.influence = influence or {}
        """id(engine) → its exact `Influence`."""
        self._scores: dict = {}

    @classmethod
    def of(cls, options, *profiles) -> "CircuitFinder":
        """The finder of an `AnalysisOptions`, with the exact influence of `profiles`' engines."""
        return cls(options.discovery, options.ig_steps, options.attribution_dtype,
                   {id(p.engine): p.influence for p in profiles if p.engine is not None},
                   options.sender_source, getattr(options, "exact_agreement", False))

    def scores(self, engine: AblationEngine, method: str):
        """(adapter, node scores) of `engine`, kept for the two latest engines (teacher, student)."""
        key = id(engine)
        if key not in self._scores:
            adapter = engine_adapter(engine, self.dtype)
            self._scores[key] = (engine, adapter, node_attribution(engine, method, self.ig_steps, adapter))
            while len(self._scores) > 2:
                self._scores.pop(next(iter(self._scores)))
        return self._scores[key][1:]

    def __call__(self, engine: AblationEngine, threshold: float = 0.20, edges: bool = True,
                 progress=None) -> Circuit:
        b = engine.bridged
        method = resolve(self.method, b.n_layers, b.n_heads, edges)
        if method == "exact":
            return discover(engine, threshold, edges, progress, self.sender_source)
        require_positive_metric(engine)
        adapter, scores = self.scores(engine, method)
        circuit = verified_circuit(engine, scores, threshold, edges, progress, adapter, self.sender_source)
        circuit.discovery["dtype"] = self.dtype
        circuit.discovery["requested"] = self.method
        influence: Influence | None = self.influence.get(id(engine))
        agreement = rank_agreement(scores.by_node(), influence) if influence is not None else {}
        if self.exact_agreement:
            agreement |= circuit_agreement(circuit, discover(engine, threshold, edges, None, self.sender_source))
        if agreement:
            circuit.discovery["agreement"] = agreement
        circuit.discovery["node_scores"] = scores.by_node()
        return circuit


def circuit_agreement(found: Circuit, exact: Circuit) -> dict:
    """The Jaccard index of two circuits' nodes and (when both pruned edges) edges, and exact
    pruning's circuit size."""
    both = found.edges_pruned and exact.edges_pruned
    return {"jaccard_nodes": jaccard(found.nodes, exact.nodes),
            "jaccard_edges": jaccard(found.edges, exact.edges) if both else None,
            "exact_nodes": exact.nodes, "exact_edges": len(exact.edges) if exact.edges_pruned else None}
