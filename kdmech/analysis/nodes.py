"""Components a circuit is made of (docs/method.md §3): attention heads and MLP layers.

Names are ``L{layer}.H{head}`` and ``L{layer}.MLP``. Node order everywhere is layer by layer,
heads 0..H−1 then the MLP, so dense score tensors line up with `all_nodes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kdmech.errors import KdmechError

_NAME = re.compile(r"^L(\d+)\.(?:H(\d+)|MLP)$")


@dataclass(frozen=True)
class Node:
    layer: int
    head: int | None = None
    """Head index, or None for the layer's MLP."""

    def __post_init__(self):
        if self.layer < 0 or (self.head is not None and self.head < 0):
            raise KdmechError(f"node indices must be ≥ 0, got layer {self.layer}, head {self.head}")

    @property
    def is_head(self) -> bool:
        return self.head is not None

    @property
    def name(self) -> str:
        return f"L{self.layer}.H{self.head}" if self.is_head else f"L{self.layer}.MLP"

    @property
    def hook(self) -> str:
        """The TransformerLens hook this node's ablation edits."""
        return (f"blocks.{self.layer}.attn.hook_z" if self.is_head
                else f"blocks.{self.layer}.hook_mlp_out")

    @classmethod
    def parse(cls, name: str) -> "Node":
        m = _NAME.match(name)
        if not m:
            raise KdmechError(f"node name {name!r} is not of the form L<layer>.H<head> or L<layer>.MLP")
        return cls(int(m[1]), int(m[2]) if m[2] is not None else None)

    def __str__(self) -> str:
        return self.name

    def __lt__(self, other: "Node") -> bool:
        """Layer by layer; within a layer heads 0..H−1, then the MLP."""
        key = lambda n: (n.layer, n.head if n.is_head else 1 << 30)  # noqa: E731
        return key(self) < key(other)


def all_nodes(n_layers: int, n_heads: int) -> list[Node]:
    return [n for layer in range(n_layers)
            for n in [*(Node(layer, h) for h in range(n_heads)), Node(layer)]]


def ablation_plan(nodes) -> tuple[dict[int, list[int]], set[int]]:
    """(layer → its heads among `nodes`, the layers whose MLP is among them): what a runner
    replaces, layer by layer."""
    heads_at: dict[int, list[int]] = {}
    mlps = set()
    for node in nodes:
        if node.is_head:
            heads_at.setdefault(node.layer, []).append(node.head)
        else:
            mlps.add(node.layer)
    return heads_at, mlps
