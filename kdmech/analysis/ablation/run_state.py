"""A cached forward of a residual runner (`contract.ResidualRunner`): what path patching and
the residual probes read, and the helpers that fill it a slice of prompt rows at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class RunState:
    """One cached forward over the clean prompts, every position kept, some nodes ablated
    (none for the clean run): the residual entering each block and after its attention, each
    layer's head outputs before W_O (heads concatenated), each MLP's output, the final
    residual, and the ablation itself, so that a path-patched forward continues with it."""

    resid_pre: list[torch.Tensor]
    resid_mid: list[torch.Tensor]
    z: list[torch.Tensor]
    mlp_out: list[torch.Tensor]
    resid_final: torch.Tensor
    heads_at: dict[int, list[int]] = field(default_factory=dict)
    """Ablated heads by layer."""
    mlps: set[int] = field(default_factory=set)
    """Layers whose MLP is ablated."""
    z_new: Callable | None = None
    """layer → replacement head outputs [N, T, d]."""
    mlp_new: Callable | None = None
    """layer → replacement MLP output [N, T, d]."""

    def rows(self, sl: slice) -> "RunState":
        """The same state for prompt rows `sl` only (views, replacements sliced alike)."""
        return RunState([x[sl] for x in self.resid_pre], [x[sl] for x in self.resid_mid],
                        [x[sl] for x in self.z], [x[sl] for x in self.mlp_out], self.resid_final[sl],
                        self.heads_at, self.mlps, rows_of(self.z_new, sl), rows_of(self.mlp_new, sl))


def rows_of(fn: Callable | None, sl: slice | None) -> Callable | None:
    """layer → fn(layer)[sl]: a replacement function restricted to prompt rows `sl`."""
    if fn is None or sl is None:
        return fn
    return lambda layer: fn(layer)[sl]


def keep(cache: list, x: torch.Tensor, layer: int, sl: slice, n: int) -> None:
    """Store `x` (rows `sl` of n) as `cache[layer]`: itself when it holds every row, else into
    one [n, ...] tensor allocated at the first slice."""
    if sl.start == 0 and sl.stop == n:
        cache.append(x)
        return
    if sl.start == 0:
        cache.append(x.new_empty((n, *x.shape[1:])))
    cache[layer][sl] = x
