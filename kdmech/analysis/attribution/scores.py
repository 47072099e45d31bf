"""Gradient attribution of nodes and edges: EAP and EAP-IG (docs/method.md §5.5).

A *path* moves every node's output from its value in a base run to a target: node n outputs
f_n(x) + α_n·(t_n − f_n(x)), f_n(x) what it computes in this forward. At α = 0 for every node
the model is the base run; at α = 1 every moving node outputs its target, which is exactly the
exact analysis' ablation (the targets are the engine's replacements, so the corrupted activation
is the one exact ablation patches in). Nodes of `Path.fixed` output their ablation replacement
throughout (α = 1, the nodes outside a circuit).

- node score s_n = ∫ ∂M/∂α_n dα over the path where every moving node's α goes 0 → 1 together,
  M the mean task metric. ∂M/∂α_n = (t_n − f_n(x))·∂M/∂(output_n): EAP is the one point α = 0
  (s_n = (t_n − a_n)·∂M/∂a_n at the base run); EAP-IG the midpoint rule with `ig_steps` points
  α = (k + ½)/m. Σ_n s_n → M(every moving node at its target) − M(base) as m grows.
- edge score s_{u→r} = Σ_{b,t} Δ_u · ∂M/∂x_r averaged along the same points: Δ_u = ∂(output
  of u)/∂α_u written into the residual stream ((t − z)·W_O,h for a head, t − out for an MLP),
  x_r the receiver input (q/k/v of a head — of a KV group under GQA —, an MLP's input, the final
  residual), each receiver reading its own copy of the residual stream. For every sender, its
  edges to every receiver downstream sum to its node score.

Batched over prompt rows (`chunks`, the engine's memory budget); scores are sums over rows,
so any batching gives the same numbers up to float rounding. Gradients are taken with
`torch.autograd.grad` of the adapter's frozen copy: no model weight receives a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from kdmech.analysis.attribution.adapter import AttributionAdapter
from kdmech.analysis.edges import Edge, Receiver, upstream
from kdmech.analysis.nodes import Node, all_nodes
from kdmech.errors import KdmechError
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet

METHODS = ("eap", "eap-ig")


def path_points(method: str, ig_steps: int) -> list[float]:
    """The α at which gradients are taken: [0] for EAP, midpoints (k + ½)/m for EAP-IG."""
    if method == "eap":
        return [0.0]
    if method == "eap-ig":
        if ig_steps < 1:
            raise KdmechError(f"ig_steps must be ≥ 1, got {ig_steps}")
        return [(k + 0.5) / ig_steps for k in range(ig_steps)]
    raise KdmechError(f"attribution method {method!r} is unknown; accepted: {list(METHODS)}")


@dataclass
class Path:
    """Where a path starts and ends (see module docstring); replacement functions give
    layer → [N, T, H·d_head] head outputs or [N, T, d] MLP outputs over every prompt row."""

    z_target: Callable[[int], torch.Tensor]
    mlp_target: Callable[[int], torch.Tensor]
    fixed: set[Node] = field(default_factory=set)
    z_fixed: Callable[[int], torch.Tensor] | None = None
    mlp_fixed: Callable[[int], torch.Tensor] | None = None
    moving: set[Node] | None = None
    """Nodes whose α moves (None: every node not fixed); the others stay at α = 0."""


@dataclass(frozen=True)
class AttributionScores:
    method: str
    ig_steps: int
    nodes: list[Node]
    node_scores: torch.Tensor
    """[n_nodes], node order: the estimated change of the mean metric."""
    receivers: list[Receiver] = field(default_factory=list)
    edge_scores: torch.Tensor | None = None
    """[n_nodes, n_receivers]; 0 where the sender is not upstream of the receiver."""

    def by_node(self) -> dict[str, float]:
        return {n.name: s for n, s in zip(self.nodes, self.node_scores.tolist())}

    def edges(self, senders: set[Node], receivers: list[Receiver]) -> dict[Edge, float]:
        """Scores of every edge from `senders` into `receivers` (sender upstream)."""
        col = {r: j for j, r in enumerate(self.receivers)}
        out = {}
        for i, s in enumerate(self.nodes):
            if s in senders:
                out.update({Edge(s, r): self.edge_scores[i, col[r]].item() for r in receivers if upstream(s, r)})
        return out


def _layer_mask(nodes, n_layers: int, n_heads: int, device) -> torch.Tensor:
    """[L, H + 1]: 1 at the nodes' entries (column H: the MLP)."""
    mask = torch.zeros(n_layers, n_heads + 1, device=device)
    for n in nodes:
        mask[n.layer, n.head if n.is_head else n_heads] = 1.0
    return mask


def attribute(adapter: AttributionAdapter, prompts: PromptSet, path: Path, alphas: list[float],
              chunks: list[slice], edges: bool = False, method: str = "eap",
              attention_layers: set[int] | None = None) -> AttributionScores:
    """Node (and, with `edges`, edge) scores along `path` at the points `alphas`; with
    `attention_layers`, only those layers' attention inputs are receivers (each one costs its
    own norm and projection of the residual per receiver), MLP inputs and the final residual
    always are."""
    L, H = adapter.n_layers, adapter.n_heads
    device = prompts.device
    fixed = _layer_mask(path.fixed, L, H, device)
    moving = (1 - fixed) if path.moving is None else _layer_mask(path.moving, L, H, device) * (1 - fixed)
    attn = [attention_layers is None or l in attention_layers for l in range(L)]
    receivers = ([r for l in range(L) for r in [*(adapter.attention_receivers(l) if attn[l] else []),
                                                Receiver(l, "mlp")]] + [Receiver.final()] if edges else [])
    node_sum = torch.zeros(L, H + 1, device=device)
    edge_sum = torch.zeros(L * (H + 1), len(receivers), device=device) if edges else None
    for sl in chunks:
        for a in alphas:
            grads, deltas, recv = _one_point(adapter, prompts, path, sl, fixed, moving * a, edges, attn)
            node_sum += grads
            if edges:
                edge_sum += _edge_scores(adapter, deltas, recv)
    scale = 1.0 / (len(prompts) * len(alphas))
    ig_steps = len(alphas) if method == "eap-ig" else 1
    return AttributionScores(method, ig_steps, all_nodes(L, H), (node_sum * scale).flatten().cpu(),
                             receivers,
                             (edge_sum * scale).cpu() if edges else None)


def _targets(path: Path, layer: int, fixed_row: torch.Tensor, sl: slice, d_head: int):
    """The layer's head and MLP targets for prompt rows `sl` (fixed nodes: their replacement)."""
    z_t, m_t = path.z_target(layer)[sl], path.mlp_target(layer)[sl]
    if fixed_row.any():
        cols = fixed_row[:-1].repeat_interleave(d_head).bool()
        if cols.any():
            z_t = torch.where(cols, path.z_fixed(layer)[sl], z_t)
        if fixed_row[-1] > 0:
            m_t = path.mlp_fixed(layer)[sl]
    return z_t, m_t


def _node_hooks(adapter, path, sl, fixed, alpha, deltas, edges):
    """Hooks blending every node toward its target by its α (fixed nodes: α = 1)."""
    handles, dh = [], adapter.d_head
    for l in range(adapter.n_layers):
        z_t, m_t = _targets(path, l, fixed[l], sl, dh)
        eff = fixed[l] + (1 - fixed[l]) * alpha[l]
        live = (1 - fixed[l])

        def blend_z(m, args, l=l, z_t=z_t, eff=eff, live=live):
            z = args[0]
            step = z_t.to(z.dtype) - z
            if edges:
                deltas[("z", l)] = adapter.head_writes(l, step.detach()) * live[:-1, None].to(z.dtype)
            return (z + eff[:-1].repeat_interleave(dh).to(z.dtype) * step, *args[1:])

        def blend_mlp(m, args, out, l=l, m_t=m_t, eff=eff, live=live):
            step = m_t.to(out.dtype) - out
            if edges:
                deltas[("mlp", l)] = step.detach() * live[-1].to(out.dtype)
            return out + eff[-1].to(out.dtype) * step

        handles.append(adapter.z_module(l).register_forward_pre_hook(blend_z))
        handles.append(adapter.mlp_module(l).register_forward_hook(blend_mlp))
    return handles


def _one_point(adapter, prompts, path, sl, fixed, alpha_values, edges, attn):
    """One forward-backward at one path point over prompt rows `sl`: (∂ΣM/∂α [L, H+1], sender
    deltas, receiver-input gradients: per layer, its attention inputs' (None where `attn` is
    false) and its MLP input's, then the final residual's)."""
    alpha = alpha_values.clone().requires_grad_(True)
    ids, positions = prompts.clean[sl], prompts.positions[sl]
    dtype = next(adapter.model.parameters()).dtype
    deltas: dict = {}
    leaves, handles = [], []
    try:
        handles += _node_hooks(adapter, path, sl, fixed, alpha, deltas, edges)
        if edges:
            b, t, d = ids.shape[0], ids.shape[1], adapter.model.config.hidden_size
            for l in range(adapter.n_layers):
                if attn[l]:
                    n_in = len(adapter.attention_receivers(l))
                    leaves.append(torch.zeros(b, t, n_in, d, dtype=dtype, device=ids.device, requires_grad=True))
                    handles += adapter.hook_attention_inputs(l, leaves[-1])
                leaves.append(torch.zeros(b, t, d, dtype=dtype, device=ids.device, requires_grad=True))
                handles += adapter.hook_mlp_input(l, leaves[-1])
            leaves.append(torch.zeros(b, t, d, dtype=dtype, device=ids.device, requires_grad=True))
            handles += adapter.hook_final_input(leaves[-1])
        with torch.enable_grad():
            total = task_metric(adapter.logits_at(ids, positions).float(), prompts, rows=sl).sum()
            grads = torch.autograd.grad(total, [alpha, *leaves])
    finally:
        for h in handles:
            h.remove()
    recv, rest = [], list(grads[1:])
    if edges:
        for l in range(adapter.n_layers):
            recv += [rest.pop(0) if attn[l] else None, rest.pop(0)]
        recv.append(rest.pop(0))
    return grads[0], deltas, recv


def _edge_scores(adapter, deltas: dict, recv: list[torch.Tensor]) -> torch.Tensor:
    """Σ_{b,t} Δ_sender · ∂M/∂x_receiver for every (sender, receiver) with the sender upstream:
    [n_nodes, n_receivers] in node order and `attribute`'s receiver order."""
    L, H = adapter.n_layers, adapter.n_heads
    per_layer = [torch.cat([deltas[("z", l)], deltas[("mlp", l)][:, :, None]], dim=2) for l in range(L)]
    senders = torch.cat(per_layer, dim=2).float()  # [B, T, S, d]
    cols = []
    for l in range(L):
        g_attn, g_mlp = recv[2 * l], recv[2 * l + 1].float()
        before = l * (H + 1)  # senders of earlier layers
        if g_attn is not None:
            s_attn = torch.einsum("btsd,btrd->sr", senders[:, :, :before], g_attn.float())
            cols.append(torch.nn.functional.pad(s_attn, (0, 0, 0, senders.shape[2] - before)))
        s_mlp = torch.einsum("btsd,btd->s", senders[:, :, :before + H], g_mlp)  # + this layer's heads
        cols.append(torch.nn.functional.pad(s_mlp, (0, senders.shape[2] - before - H))[:, None])
    cols.append(torch.einsum("btsd,btd->s", senders, recv[-1].float())[:, None])
    return torch.cat(cols, dim=1)
