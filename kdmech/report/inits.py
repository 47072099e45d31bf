"""The birth of a student as a variable: the inits of one capacity compared across seeds.

Grouping. The replicate groups of kdmech.report.replicates (capacity, other swept values,
init; seeds within) are gathered by capacity and other swept values; where one capacity has
two or more inits (every_k, first_k, importance, random), its inits are compared.

What is compared, each by the replicates' call-out rule (both inits have ≥ 2 seeds and their
95% Student t intervals do not overlap): A, the student's worst single-node drop and its
circuit size at T = 0.20. And the circuit itself: each circuit node is named by the teacher
component it was born from (student L1.H0 copied from teacher layer 3's head 2 is T3.H2, its
MLP T3.MLP; a node with nothing copied, as under init random, keeps its student name), so two
inits whose students keep different teacher heads have different circuits even where the
student names agree. The agreement of two circuits is the Jaccard index of those node sets,
|a ∩ b| / |a ∪ b| (1 for two empty circuits); an init changes the circuit beyond the seed
spread where the mean agreement between its seeds' circuits and the other init's is below the
mean agreement among each init's own seeds (both with ≥ 2 seeds). This is a descriptive rule,
not a test.

Per init the teacher layers and heads its students were born with (provenance.json) are shown:
the same for every seed of an init unless a seed-dependent init (random) copied none.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, product

import numpy as np

from kdmech.analysis.nodes import Node
from kdmech.report.collect import StudentRecord
from kdmech.report.replicates import CapacityGroup, Difference, circuit_node_names, differences

INIT_METRICS = ("A", "worst_drop", "circuit_nodes")
"""The metrics an init is said to change (beyond the seed spread)."""


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return 1.0 if not (sa | sb) else len(sa & sb) / len(sa | sb)


def origin(record: StudentRecord, name: str) -> str:
    """The teacher component a student node was copied from (T<layer>.H<head> or T<layer>.MLP),
    or the node's own name when nothing was copied."""
    node, layer = Node.parse(name), str(Node.parse(name).layer)
    if layer not in record.layer_map:
        return name
    teacher_layer = record.layer_map[layer]
    if not node.is_head:
        return f"T{teacher_layer}.MLP"
    heads = record.heads_kept.get(layer)
    return f"T{teacher_layer}.H{heads[node.head]}" if heads and node.head < len(heads) else name


def circuit_origins(record: StudentRecord) -> list[str] | None:
    """The record's circuit (T = 0.20) in teacher-origin names, sorted; None without a circuit."""
    nodes = circuit_node_names(record)
    return None if nodes is None else sorted(origin(record, n) for n in nodes)


def _circuits(group: CapacityGroup) -> list[list[str]]:
    return [c for c in (circuit_origins(r) for r in group.records) if c is not None]


def _within(group: CapacityGroup) -> float | None:
    """Mean agreement of the circuits of one init's seeds (None below two circuits)."""
    pairs = list(combinations(_circuits(group), 2))
    return float(np.mean([jaccard(a, b) for a, b in pairs])) if pairs else None


def _between(a: CapacityGroup, b: CapacityGroup) -> float | None:
    pairs = list(product(_circuits(a), _circuits(b)))
    return float(np.mean([jaccard(x, y) for x, y in pairs])) if pairs else None


@dataclass(frozen=True)
class CircuitChange:
    """Two inits' circuit agreement against each one's own seeds'."""

    a: CapacityGroup
    b: CapacityGroup
    between: float
    within_a: float
    within_b: float

    @property
    def beyond_spread(self) -> bool:
        return self.between < min(self.within_a, self.within_b)

    def text(self) -> str:
        verdict = "changes the circuit beyond the seed spread" if self.beyond_spread else "within the seed spread"
        return (f"circuit: {self.a.init} vs {self.b.init}: agreement {self.between:.2f} between them, "
                f"{self.within_a:.2f} among {self.a.init}'s seeds, {self.within_b:.2f} among {self.b.init}'s — "
                f"{verdict}")


@dataclass(frozen=True)
class InitComparison:
    """The inits of one capacity (and other swept values)."""

    label: str
    groups: tuple[CapacityGroup, ...]
    differences: tuple[Difference, ...]
    circuits: tuple[CircuitChange, ...]

    def to_json(self) -> dict:
        return {"capacity": self.label, "inits": [g.init for g in self.groups],
                "differences": [{"metric": d.metric, "lower": d.low.init, "higher": d.high.init}
                                for d in self.differences],
                "circuits": [{"inits": [c.a.init, c.b.init], "between": c.between, "within": [c.within_a, c.within_b],
                              "beyond_spread": c.beyond_spread} for c in self.circuits]}


def _capacity_key(g: CapacityGroup) -> tuple:
    return (g.capacity.get("depth"), g.capacity.get("width"), g.capacity.get("heads"), g.variant)


def compare_inits(groups: list[CapacityGroup]) -> list[InitComparison]:
    """One comparison per capacity that has two or more inits."""
    by_capacity: dict[tuple, list[CapacityGroup]] = {}
    for g in groups:
        by_capacity.setdefault(_capacity_key(g), []).append(g)
    out = []
    for gs in by_capacity.values():
        if len({g.init for g in gs}) < 2:
            continue
        gs = sorted(gs, key=lambda g: g.init)
        changes = []
        for a, b in combinations(gs, 2):
            between, wa, wb = _between(a, b), _within(a), _within(b)
            if None not in (between, wa, wb):
                changes.append(CircuitChange(a, b, between, wa, wb))
        label = gs[0].label.rsplit(" (", 1)[0]
        out.append(InitComparison(label, tuple(gs), tuple(differences(gs, INIT_METRICS)), tuple(changes)))
    return out


def circuits_text(group: CapacityGroup) -> str:
    """The group's circuits in teacher-origin names, each distinct one once, with its seed count."""
    seen: dict[tuple, int] = {}
    for c in _circuits(group):
        seen[tuple(c)] = seen.get(tuple(c), 0) + 1
    return " | ".join(f"{{{', '.join(c)}}}" + (f" ×{k}" if k > 1 else "") for c, k in seen.items()) or "–"


def born_with(group: CapacityGroup) -> tuple[str, str]:
    """(teacher layers, teacher heads per student layer) the group's students were born with:
    one value when every seed agrees, else each seed's; "none (random)" for no copy."""
    layers = {tuple(int(t) for t in r.layer_map.values()) for r in group.records}
    if group.init == "random" or layers == {()}:
        return "none (random)", "none (random)"
    heads = {tuple(f"L{i}←T{r.layer_map[i]}.H{list(h)}" for i, h in sorted(r.heads_kept.items(),
                                                                          key=lambda kv: int(kv[0])))
             for r in group.records}
    return " | ".join(str(list(x)) for x in sorted(layers)), " | ".join("; ".join(x) or "–" for x in sorted(heads))
