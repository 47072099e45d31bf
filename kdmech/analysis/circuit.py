"""Circuit discovery (docs/method.md §5).

Node pruning, greedy and stateful: the candidate circuit starts as the whole model and every
node outside it is ablated at once. A node is removed if the circuit without it still keeps
≥ (1 − T)·LD_full. Passes alternate backward (last layer to first; in each layer the MLP, then
heads 0..H−1) and forward (first layer to last; heads, then the MLP) until a pass removes
nothing (at most 50 passes). When it stops that way, every kept node is necessary: removing
any one of them drops the circuit below the threshold.

Edge pruning by path patching on the node circuit. Throughout, every node outside the node
circuit stays ablated with the engine's kind (mean by default), exactly as in node pruning,
so the starting point is the circuit's own metric (its completeness × LD_full, ≈ 80–85% of
it), not the full model's. One forward with those ablations is cached (residuals, head
outputs before W_O, MLP outputs: the circuit state). Senders are the circuit's heads and
MLPs; a sender's change is its *paired* corrupted output (the same prompt row of the
corrupted set) minus its output in the circuit state; for a head that is (z_corrupted,h −
z_circuit,h)·W_O,h. The corrupted output comes from the intact corrupted run
(`sender_source` "intact", kdmech's) or from the corrupted run with the nodes outside the
circuit ablated ("circuit_ablated", as the authors' upstream edge pruning caches it).
Receivers are a circuit head's q, k and v inputs (each separately), a circuit MLP's input
and the final residual stream; a sender feeds every receiver of a later layer, and a head
also feeds its own layer's MLP. For each sender→receiver edge only that receiver input sees
the change (its LayerNorm input becomes circuit-state residual + change; the head's other
two inputs, the layer's other heads and everything upstream keep their circuit-state values:
a direct path, as Wang et al. define path patching); downstream of the receiver the forward
is recomputed with the non-circuit nodes still ablated. The edge is kept if patching it
alone leaves the metric below (1 − T)·LD_full. Receivers left with no incoming edge are
dropped; a node with no kept edge in or out leaves the edge-level circuit. Path patching
assumes an additive residual stream (pre-LayerNorm models), so it runs only for families
that declare one (`ModelFamily.additive_residual`); post-LayerNorm encoders (BERT) refuse
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from kdmech.analysis.ablation.contract import readout_at
from kdmech.analysis.ablation.engine import AblationEngine, chunked_metric
from kdmech.analysis.edges import Edge, edge_nodes, upstream
from kdmech.analysis.nodes import Node
from kdmech.errors import KdmechError

THRESHOLDS = (0.10, 0.15, 0.20, 0.25, 0.30)
REFERENCE_THRESHOLD = 0.20
"""T of the circuit read at checkpoints, in the timeline and in every report."""
EDGES = "edge pruning (path patching)"


@dataclass(frozen=True)
class Circuit:
    threshold: float
    """T: the circuit keeps at least (1 − T) of LD_full."""
    nodes: list[str]
    edges: list[Edge] = field(default_factory=list)
    """Kept edges (`kdmech.analysis.edges`); JSON: [sender, receiver input] name pairs."""
    completeness: float = float("nan")
    """% of LD_full with only the circuit kept (everything else ablated)."""
    faithfulness: float = float("nan")
    """% of LD_full with the circuit ablated and everything else kept."""
    passes: int = 0
    ablation: str = "mean"
    edges_pruned: bool = False
    edge_nodes: list[str] = field(default_factory=list)
    """Nodes left after edge pruning (those with at least one kept edge)."""
    edges_note: str = ""
    """Why edges were not pruned when they were asked for (the family's residual stream is
    not additive, e.g. BERT's post-LayerNorm)."""
    sender_source: str = "intact"
    """Where path patching took a sender's corrupted activation (`path_patching`)."""
    discovery: dict = field(default_factory=lambda: {"method": "exact"})
    """How the circuit was found: exact pruning, or attribution verified exactly (method,
    ig_steps, exact forwards, agreement with exact; `kdmech.analysis.attribution`)."""

    @property
    def empty(self) -> bool:
        return not self.nodes

    @property
    def summary(self) -> str:
        """One line for the console and the report; an empty circuit says what it is."""
        if self.empty:
            return (f"no circuit: {self.completeness:.0f}% of LD survives ablating every node "
                    f"(T = {self.threshold:g})")
        edges = (f"{len(self.edges)} edges" if self.edges_pruned
                 else "edges not pruned" + (" (refused)" if self.edges_note else ""))
        return (f"{len(self.nodes)} nodes {self.nodes}, {edges}, completeness "
                f"{self.completeness:.0f}%")

    @property
    def heads(self) -> list[str]:
        return [n for n in self.nodes if ".H" in n]

    @property
    def mlps(self) -> list[str]:
        return [n for n in self.nodes if n.endswith(".MLP")]

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**out, "edges": [e.to_json() for e in self.edges], "empty": self.empty, "summary": self.summary}

    @classmethod
    def from_json(cls, d: dict) -> "Circuit":
        kept = {k: v for k, v in d.items() if k not in ("empty", "summary")}
        return cls(**{**kept, "edges": [Edge.from_json(e) for e in d.get("edges", [])]})


def backward_order(nodes: list[Node]) -> list[Node]:
    layers = sorted({n.layer for n in nodes}, reverse=True)
    out = []
    for layer in layers:
        out += [n for n in nodes if n.layer == layer and not n.is_head]
        out += sorted(n for n in nodes if n.layer == layer and n.is_head)
    return out


def forward_order(nodes: list[Node]) -> list[Node]:
    layers = sorted({n.layer for n in nodes})
    out = []
    for layer in layers:
        out += sorted(n for n in nodes if n.layer == layer and n.is_head)
        out += [n for n in nodes if n.layer == layer and not n.is_head]
    return out


def require_positive_metric(engine: AblationEngine) -> float:
    ld = engine.full_metric
    if ld <= 0:
        raise KdmechError(f"the model does not solve the task (LD_full = {ld:.3f} ≤ 0); circuit "
                          f"discovery needs a positive logit difference")
    return ld


def retained_with_only(engine: AblationEngine, keep: set[Node]) -> float:
    """% of LD_full kept when every node outside `keep` is ablated."""
    outside = [n for n in engine.bridged.nodes if n not in keep]
    return 100.0 * engine.metric(outside) / engine.full_metric


def prune_nodes(engine: AblationEngine, threshold: float = 0.20, max_passes: int = 50,
                progress=None, start: set[Node] | None = None,
                order: list[Node] | None = None) -> tuple[set[Node], int]:
    """The node circuit and the number of passes it took (see module docstring); `start`: the
    candidate circuit pruning starts from (default: the whole model); `order`: the visiting
    order of the first pass, the passes alternating it and its reverse (default: backward,
    then forward)."""
    require_positive_metric(engine)
    all_nodes = list(engine.bridged.nodes)
    circuit = set(all_nodes) if start is None else set(start)
    keep_percent = 100.0 * (1 - threshold)
    orders = ((backward_order(all_nodes), forward_order(all_nodes)) if order is None
              else (list(order), list(reversed(order))))
    passes = 0
    while passes < max_passes:
        order = orders[passes % 2]
        removed = False
        for node in order:
            if node not in circuit:
                continue
            trial = circuit - {node}
            if retained_with_only(engine, trial) >= keep_percent:
                circuit = trial
                removed = True
            if progress:
                progress(1)
        passes += 1
        if not removed:
            break
    return circuit, passes


@dataclass(frozen=True)
class EdgeScores:
    baseline: float
    """Mean metric of the node circuit alone (every other node ablated, no edge patched)."""
    scores: dict[Edge, float]
    """Edge → mean metric with that one path patched."""


def _sender_activations(engine: AblationEngine, outside: list[Node], sender_source: str):
    """(layer → corrupted head outputs [N, T, d] (heads concatenated), layer → corrupted MLP
    outputs [N, T, d]) of the senders, paired row by row with the prompts."""
    if sender_source == "circuit_ablated":
        corrupted = engine.ablated_state(outside, ids=engine.prompts.corrupted)
        return (lambda layer: corrupted.z[layer]), (lambda layer: corrupted.mlp_out[layer])
    if sender_source != "intact":
        raise KdmechError(f"sender source {sender_source!r} is unknown; accepted: intact, circuit_ablated")
    paired = engine.paired_corrupted().full
    return (lambda layer: paired[Node(layer, 0).hook].flatten(2)), (lambda layer: paired[Node(layer).hook])


class PathPatcher:
    """Path patching (see module docstring) of one node circuit: the circuit state and the
    baseline are computed once, then `score` path-patches any of its edges, in as many calls
    as wanted (attribution's edge verification checks them a round at a time)."""

    def __init__(self, engine: AblationEngine, circuit: set[Node], sender_source: str = "intact"):
        self.circuit = set(circuit)
        self.runner = runner = engine.residual_runner(EDGES)
        self.prompts = p = engine.prompts
        outside = [n for n in engine.bridged.nodes if n not in circuit]
        state = engine.ablated_state(outside)
        z_of, mlp_of = _sender_activations(engine, outside, sender_source)
        self.baseline = chunked_metric(runner, lambda sl: readout_at(
            state.resid_final if sl is None else state.resid_final[sl], p.positions if sl is None else p.positions[sl]),
            p, engine.row_chunks).mean().item()
        """Mean metric of the node circuit alone (every other node ablated, no edge patched)."""
        # each patched forward runs on one slice of prompt rows (the engine's memory budget; one
        # slice without it); an edge's score is the mean over every prompt
        self.slices = [(sl, state.rows(sl), lambda layer, sl=sl: z_of(layer)[sl],
                        lambda layer, sl=sl: mlp_of(layer)[sl]) for sl in engine.row_chunks]
        self.receivers = runner.receivers(self.circuit)

    def edges(self) -> list[Edge]:
        """Every edge of the circuit: senders in node order, each into its downstream receivers."""
        return [Edge(s, r) for s in sorted(self.circuit) for r in self.receivers if upstream(s, r)]

    def score(self, edges: list[Edge], progress=None) -> dict[Edge, float]:
        """Edge → mean metric with that one path patched; a sender's change is computed once
        per call."""
        by_sender: dict[Node, list[Edge]] = {}
        for e in edges:
            by_sender.setdefault(e.sender, []).append(e)
        scores = {}
        for sender, group in by_sender.items():
            deltas = [self.runner.sender_delta(sender, z_corrupted, mlp_corrupted, st)
                      for _, st, z_corrupted, mlp_corrupted in self.slices]
            for e in group:
                lds = [self.runner.metric(self.runner.patched_path_resid(delta, e.receiver, self.prompts.positions[sl],
                                                                         st), self.prompts, rows=sl)
                       for (sl, st, _, _), delta in zip(self.slices, deltas)]
                scores[e] = torch.cat(lds).mean().item()
                if progress:
                    progress(1)
        return scores


def path_patching(engine: AblationEngine, circuit: set[Node], progress=None,
                  only: set[Edge] | None = None, sender_source: str = "intact") -> EdgeScores:
    """Every edge of the node circuit (or of `only`) scored by path patching (see module
    docstring), senders from `sender_source` (intact or circuit_ablated)."""
    patcher = PathPatcher(engine, circuit, sender_source)
    edges = [e for e in patcher.edges() if only is None or e in only]
    return EdgeScores(patcher.baseline, patcher.score(edges, progress))


def prune_edges(engine: AblationEngine, circuit: set[Node], threshold: float = 0.20,
                progress=None, sender_source: str = "intact") -> list[Edge]:
    """The edges kept: patching one alone leaves the metric below (1 − T)·LD_full."""
    engine.residual_runner(EDGES)  # refused before any work when the family cannot
    limit = (1 - threshold) * require_positive_metric(engine)
    scored = path_patching(engine, circuit, progress, sender_source=sender_source)
    return [edge for edge, ld in scored.scores.items() if ld < limit]


def discover(engine: AblationEngine, threshold: float = 0.20, edges: bool = True,
             progress=None, sender_source: str = "intact") -> Circuit:
    nodes, passes = prune_nodes(engine, threshold, progress=progress)
    refused = engine.residual_refusal(EDGES) if edges else ""
    edge_list = prune_edges(engine, nodes, threshold, progress, sender_source) if edges and not refused else []
    return measured_circuit(engine, threshold, nodes, passes, edge_list, edges and not refused, refused,
                            sender_source)


def measured_circuit(engine: AblationEngine, threshold: float, nodes: set[Node], passes: int, edge_list: list,
                     edges_pruned: bool, refused: str, sender_source: str, discovery: dict | None = None) -> Circuit:
    """A found circuit with its exact completeness and faithfulness (whatever found it)."""
    everything = set(engine.bridged.nodes)
    return Circuit(
        threshold=threshold, nodes=[n.name for n in sorted(nodes)], edges=edge_list,
        completeness=retained_with_only(engine, nodes),
        faithfulness=retained_with_only(engine, everything - nodes),
        passes=passes, ablation=engine.kind.value, edges_pruned=edges_pruned,
        edge_nodes=[n.name for n in edge_nodes(edge_list)],
        edges_note=f"{refused}; the node-level circuit stands" if refused else "",
        sender_source=sender_source, **({"discovery": discovery} if discovery is not None else {}))


@dataclass(frozen=True)
class ThresholdSweep:
    circuits: list[Circuit]
    reference_threshold: float = 0.20

    def rows(self) -> list[dict]:
        ref = next(c for c in self.circuits if abs(c.threshold - self.reference_threshold) < 1e-9)
        out = []
        for c in self.circuits:
            a, b = set(c.nodes), set(ref.nodes)
            out.append({"threshold": c.threshold, "heads": len(c.heads), "mlps": len(c.mlps),
                        "nodes": len(c.nodes), "edges": len(c.edges) if c.edges_pruned else None,
                        "completeness": c.completeness, "faithfulness": c.faithfulness,
                        "jaccard_vs_ref": len(a & b) / len(a | b) if a | b else 1.0})
        return out

    def to_json(self) -> dict:
        return {"reference_threshold": self.reference_threshold,
                "circuits": [c.to_json() for c in self.circuits], "table": self.rows()}


def threshold_sweep(engine: AblationEngine, thresholds=THRESHOLDS, edges: bool = True,
                    progress=None, finder=None) -> ThresholdSweep:
    """A circuit per threshold; `finder(engine, threshold, edges, progress)` finds each
    (default: exact pruning, `discover`)."""
    if not any(abs(t - 0.20) < 1e-9 for t in thresholds):
        thresholds = (*thresholds, 0.20)
    finder = finder or discover
    return ThresholdSweep([finder(engine, t, edges, progress) for t in sorted(thresholds)])
