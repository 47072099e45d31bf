"""Edges of a circuit (docs/method.md §5.2): a sender node and the input of a receiver.

A receiver is one input of a downstream component: the query, key or value input of a head,
an MLP's input, or the final residual stream the unembedding reads. Under grouped-query
attention one key/value projection serves a group of query heads, so its k and v inputs are
one receiver per KV group (`L{l}.G{g}.k`), not one per query head.

JSON form (step and circuit files): an edge is `[sender name, receiver name]`, e.g.
`["L0.H1", "L2.H3.q"]`, `["L1.MLP", "L2.MLP"]`, `["L1.H0", "resid_final"]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kdmech.analysis.nodes import Node
from kdmech.errors import KdmechError

Port = Literal["q", "k", "v", "mlp", "resid"]
"""Which input of the receiver an edge enters."""

FINAL_LAYER = 1 << 30
"""The final residual's layer: after every block, whatever the model's depth."""

_HEAD_INPUT = re.compile(r"^L(\d+)\.(H|G)(\d+)\.([qkv])$")
_MLP = re.compile(r"^L(\d+)\.MLP$")


@dataclass(frozen=True, order=True)
class Receiver:
    layer: int
    """The receiver's layer; the final residual's is `FINAL_LAYER` (`Receiver.final()`)."""
    port: Port
    index: int | None = None
    """q: the query head; k/v: the head, or under GQA (`group`) the KV group; mlp/resid: None."""
    group: bool = False
    """k/v of a KV group shared by several query heads (grouped-query attention)."""

    def __post_init__(self):
        if (self.port in ("q", "k", "v")) != (self.index is not None):
            raise KdmechError(f"receiver port {self.port!r} with index {self.index!r}: q/k/v take a "
                              f"head or group index, mlp and resid none")
        if (self.port == "resid") != (self.layer == FINAL_LAYER):
            raise KdmechError("the final residual is Receiver.final(), at FINAL_LAYER; no other receiver is")
        if self.group and self.port not in ("k", "v"):
            raise KdmechError(f"only k and v inputs belong to a KV group, not {self.port!r}")

    @property
    def name(self) -> str:
        if self.port == "resid":
            return "resid_final"
        if self.port == "mlp":
            return f"L{self.layer}.MLP"
        return f"L{self.layer}.{'G' if self.group else 'H'}{self.index}.{self.port}"

    @property
    def node(self) -> Node | None:
        """The receiving component (a head for q and per-head k/v, the MLP), None for the final
        residual and for a KV group's shared input."""
        if self.port == "mlp":
            return Node(self.layer)
        if self.port == "resid" or self.group:
            return None
        return Node(self.layer, self.index)

    @classmethod
    def final(cls) -> "Receiver":
        """The final residual stream, which the unembedding reads."""
        return cls(FINAL_LAYER, "resid")

    @classmethod
    def parse(cls, name: str) -> "Receiver":
        if name == "resid_final":
            return cls.final()
        if m := _MLP.match(name):
            return cls(int(m[1]), "mlp")
        if m := _HEAD_INPUT.match(name):
            return cls(int(m[1]), m[4], int(m[3]), group=m[2] == "G")
        raise KdmechError(f"receiver {name!r} is not one of L<l>.H<h>.q|k|v, L<l>.G<g>.k|v, "
                          f"L<l>.MLP or resid_final")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Edge:
    sender: Node
    receiver: Receiver

    def to_json(self) -> list[str]:
        return [self.sender.name, self.receiver.name]

    @classmethod
    def from_json(cls, pair) -> "Edge":
        sender, receiver = pair
        return cls(Node.parse(sender), Receiver.parse(receiver))


def upstream(sender: Node, receiver: Receiver) -> bool:
    """Whether `sender` writes into what `receiver` reads: an earlier layer, or a head of the
    receiving MLP's own layer."""
    if sender.layer < receiver.layer:
        return True
    return sender.layer == receiver.layer and sender.is_head and receiver.port == "mlp"


def edge_nodes(edges: list[Edge]) -> list[Node]:
    """Nodes that keep at least one edge (in or out), in node order. A KV group's shared input
    counts for no single query head."""
    nodes = {e.sender for e in edges} | {e.receiver.node for e in edges}
    nodes.discard(None)
    return sorted(nodes)
