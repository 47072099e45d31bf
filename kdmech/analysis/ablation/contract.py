"""The ablation engine's contract with a family's fast runner (docs/method.md §3.1).

A runner is exact: every number it gives equals the reference (one full forward per ablation
set, `reference.ablated_metric`) to float rounding, which its family's tests check. The
engine builds one through the registry (`runners.runner_for`) and otherwise uses the bridge.

Two levels:

- `Runner`: node ablation. A *read-out* is what the task metric is read from at the
  prediction positions: the final residual stream (before the final norm) for a residual
  runner, the MLM head's logits for BERT's.
- `ResidualRunner`: adds what path patching (edges) and the residual probes (successor OV
  scores, direct logit attribution) read, for families whose residual stream is additive
  (`ModelFamily.additive_residual`): cached forwards (`RunState`), sender deltas, patched
  paths, and the weights those probes read, named by role rather than by Hugging Face module.

Replacement functions: `z_new(layer)` → replacement head outputs [N, T, n_heads·d_head] (the
input of the attention output projection, query heads in order), `mlp_new(layer)` →
replacement MLP outputs [N, T, d_model]. `rows` restricts a call to a slice of prompt rows
(a memory budget): positions are those rows', replacements are sliced by the runner.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from kdmech.analysis.ablation.run_state import RunState
from kdmech.analysis.edges import Receiver
from kdmech.analysis.nodes import Node

Replacement = Callable[[int], torch.Tensor]
"""layer → replacement activations for every prompt row [N, T, ...]."""


@runtime_checkable
class Runner(Protocol):
    n_layers: int
    n_heads: int

    def clean_readout(self, positions: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """The intact model's read-out at each prompt's prediction position [n, ...]."""

    def ablated_readout(self, nodes: list[Node], positions: torch.Tensor, z_new: Replacement,
                        mlp_new: Replacement, rows: slice | None = None) -> torch.Tensor:
        """The read-out with every node of `nodes` (non-empty) replaced at once."""

    def metric(self, readout: torch.Tensor, prompts, rows: slice | None = None) -> torch.Tensor:
        """The task metric per prompt from a read-out (`tasks.metric.task_metric`'s numbers)."""


@runtime_checkable
class ResidualRunner(Runner, Protocol):
    model: torch.nn.Module
    """The runner's own eval-mode copy of the model (never the bridge-wrapped one)."""
    clean: RunState
    """The clean forward; `resid_pre`, `resid_mid`, `z` and `resid_final` alias its fields."""

    def ablated_state(self, nodes: list[Node], z_new: Replacement | None = None,
                      mlp_new: Replacement | None = None, ids: torch.Tensor | None = None) -> RunState:
        """A cached forward over the clean prompts (or `ids` of their shape: the corrupted
        prompts, for path patching's circuit-ablated senders) with `nodes` ablated."""

    def sender_delta(self, node: Node, z_new: Replacement, mlp_new: Replacement,
                     state: RunState | None = None) -> torch.Tensor:
        """The residual change [N, T, d] when `node` outputs its replacement instead of its
        output in `state` (the clean run by default)."""

    def patched_path_resid(self, delta: torch.Tensor, receiver: Receiver, positions: torch.Tensor,
                           state: RunState | None = None) -> torch.Tensor:
        """The final residual at the positions [n, d] when only `receiver` sees `delta` on top
        of `state`; downstream of it the forward reruns with `state`'s ablations."""

    def receivers(self, circuit: set[Node]) -> list[Receiver]:
        """The inputs of a node circuit's members an edge may enter, then the final residual:
        q, k and v of each head (k and v of each KV group under GQA), each MLP's input."""

    # --- weights the residual probes read -----------------------------------------------
    def head_write(self, layer: int, head: int, z: torch.Tensor) -> torch.Tensor:
        """A head's residual write (no bias) from the layer's concatenated head outputs z."""

    def ov(self, layer: int, head: int, x: torch.Tensor) -> torch.Tensor:
        """A residual-stream input [n, d], through the block's attention-input norm, the head's
        value projection and its rows of the output projection: its OV write [n, d]."""

    def attn_out_bias(self, layer: int) -> torch.Tensor | None:
        """The bias of a layer's attention output projection (None: it has none)."""

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm applied to residuals x [.., d]."""

    def frozen_final_norm(self, final_at: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                                    torch.Tensor]:
        """The final norm linearised at the final residuals `final_at` [n, d] (their scale
        frozen): (x [n, d] ↦ x normalised — LayerNorm centres, RMSNorm does not —, the norm's
        weight). A write's share of the read-out is normalise(x) · (weight ⊙ direction)."""

    def final_norm_bias(self) -> torch.Tensor | None:
        """The final norm's bias (None: it has none)."""

    def embed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embedding rows [n, d]."""

    def unembed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unembedding rows [n, d]."""


def readout_at(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows of per-position states [n, T, ...] at each prompt's position: [n, ...]."""
    return states[torch.arange(states.shape[0], device=states.device), positions]
