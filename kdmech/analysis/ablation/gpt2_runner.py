"""The GPT-2 fast path of the ablation engine.

Plain PyTorch over the Hugging Face GPT-2 blocks (a private copy, never the bridge-wrapped
one), exact to float rounding against the bridge reference (tests check both). Savings over a
full forward per ablation set:

- caches of the clean run (residual before and after each attention layer, each head's output
  before W_O) let a forward start *inside* the first ablated block: head ablations there are
  an exact additive change of the attention output, (z_new − z)·W_O, so that block's attention
  is not recomputed;
- the last block only computes keys and values at every position; queries, attention output
  and MLP are computed at the prediction positions only;
- only the two logits the metric needs are read (answer and wrong-answer columns of W_U).

Path patching (edges) runs against a cached forward, a `RunState`: the clean run, or a run
with the nodes outside a circuit ablated (`ablated_state`).

With `batch_rows` (a memory budget, `AnalysisOptions.max_batch_tokens`) no forward takes more
prompt rows than that: cached forwards are computed a slice of rows at a time into one state,
and callers run the rest on row slices of it (`RunState.rows`).
"""

from __future__ import annotations

import copy
import math
import torch

from kdmech.analysis.ablation.reference import row_chunks
from kdmech.analysis.ablation.contract import readout_at
from kdmech.analysis.ablation.run_state import RunState, keep, rows_of
from kdmech.analysis.edges import Receiver
from kdmech.analysis.nodes import Node, ablation_plan
from kdmech.tasks.metric import task_metric


def supported(model) -> bool:
    """Whether a GPT-2 (the family decides that) has a config this runner reproduces exactly."""
    c = model.config
    return (not getattr(c, "scale_attn_by_inverse_layer_idx", False)
            and not getattr(c, "reorder_and_upcast_attn", False))


def make(model, clean: torch.Tensor, batch_rows: int | None = None) -> "GPT2Runner | None":
    """The registry's factory (`runners.register_runner`)."""
    return GPT2Runner(model, clean, batch_rows) if supported(model) else None


class GPT2Runner:
    """A `contract.ResidualRunner` over a Hugging Face GPT2LMHeadModel."""

    def __init__(self, model, clean: torch.Tensor, batch_rows: int | None = None):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        c = self.model.config
        self.n_layers, self.n_heads, self.d = c.n_layer, c.n_head, c.n_embd
        self.d_head = self.d // self.n_heads
        self.scale = 1 / math.sqrt(self.d_head) if c.scale_attn_weights else 1.0
        self.blocks = self.model.transformer.h
        self.clean_ids = clean
        self.chunks = row_chunks(clean.shape[0], batch_rows or clean.shape[0])
        """Prompt rows of each cached forward (one slice without a budget)."""
        self.clean = self.ablated_state([])
        # the clean run's caches, by their old names
        self.resid_pre, self.resid_mid, self.z = self.clean.resid_pre, self.clean.resid_mid, self.clean.z
        self.resid_final = self.clean.resid_final

    @torch.no_grad()
    def ablated_state(self, nodes: list[Node], z_new=None, mlp_new=None, ids=None) -> RunState:
        """A full forward over the clean prompts (or `ids` of the same shape, e.g. the
        corrupted ones) with `nodes` ablated (replacements as in `ablated_readout`), every
        activation path patching needs cached (see `RunState`); computed `self.chunks` rows at
        a time."""
        all_ids = self.clean_ids if ids is None else ids
        heads_at, mlps = ablation_plan(nodes)
        state = RunState([], [], [], [], None, heads_at, mlps, z_new, mlp_new)
        n = self.clean_ids.shape[0]
        final = []
        for sl in self.chunks:
            ids = all_ids[sl]
            zs, ms = rows_of(z_new, sl), rows_of(mlp_new, sl)
            h = self.model.transformer.wte(ids) + self.model.transformer.wpe(
                torch.arange(ids.shape[1], device=ids.device))[None]
            for l, block in enumerate(self.blocks):
                keep(state.resid_pre, h, l, sl, n)
                z = self._z(block, h)
                if l in heads_at:
                    z = self._patched_z(z, heads_at[l], zs(l))
                keep(state.z, z, l, sl, n)
                mid = h + block.attn.c_proj(z)
                keep(state.resid_mid, mid, l, sl, n)
                out = ms(l) if l in mlps else block.mlp(block.ln_2(mid))
                keep(state.mlp_out, out, l, sl, n)
                h = mid + out
            keep(final, h, 0, sl, n)
        state.resid_final = final[0]
        return state

    def _z(self, block, h):
        """Heads' outputs before W_O, concatenated: [B, T, d] (HF's c_proj input)."""
        return self._attend(*block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1))

    def _attend(self, q, k, v):
        b, t, _ = q.shape
        split = lambda x: x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
        z = torch.nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), is_causal=True, scale=self.scale)
        return z.transpose(1, 2).reshape(b, t, self.d)

    def head_slice(self, head: int) -> slice:
        """A head's columns in the concatenated head outputs (and its rows of W_O)."""
        return slice(head * self.d_head, (head + 1) * self.d_head)

    def _patched_z(self, z, heads, z_new):
        z = z.clone()
        for h in heads:
            z[..., self.head_slice(h)] = z_new[..., self.head_slice(h)]
        return z

    def clean_readout(self, positions: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """The clean final residual at each prompt's position [n, d]."""
        return readout_at(self.resid_final if rows is None else self.resid_final[rows], positions)

    @torch.no_grad()
    def ablated_readout(self, nodes: list[Node], positions: torch.Tensor, z_new, mlp_new,
                       rows: slice | None = None) -> torch.Tensor:
        """Residual after the last block at each prompt's position, with `nodes` ablated.
        `z_new(layer)` → replacement head outputs [N, T, d]; `mlp_new(layer)` → [N, T, d].
        With `rows`, for those prompt rows only (`positions` are theirs)."""
        heads_at, mlps = ablation_plan(nodes)
        start = min(n.layer for n in nodes)
        clean = self.clean if rows is None else self.clean.rows(rows)
        z_new, mlp_new = rows_of(z_new, rows), rows_of(mlp_new, rows)
        # exact: the first ablated block's input is clean, so only its replaced heads change
        mid = clean.resid_mid[start]
        if start in heads_at:
            mid = mid + self._heads_delta(start, heads_at[start], z_new(start), clean)
        return self.continue_from_mid(start, mid, positions, heads_at, mlps, z_new, mlp_new)

    def continue_from_mid(self, layer: int, mid: torch.Tensor, positions: torch.Tensor,
                          heads_at=None, mlps=(), z_new=None, mlp_new=None) -> torch.Tensor:
        """Finish block `layer` from its residual after attention, run the rest; returns the
        final residual at the positions [N, d]. Ablations as in `ablated_readout`."""
        heads_at = heads_at or {}
        rows = torch.arange(positions.shape[0], device=positions.device)
        last = self.n_layers - 1
        if layer == last:
            mid = mid[rows, positions]
        h = mid + self._mlp(layer, mid, positions if layer == last else None, mlps, mlp_new)
        for l in range(layer + 1, self.n_layers):
            block = self.blocks[l]
            if l == last:
                mid = self._last_attention(block, h, positions, heads_at.get(l), z_new)
                h = mid + self._mlp(l, mid, positions, mlps, mlp_new)
            else:
                z = self._z(block, h)
                if l in heads_at:
                    z = self._patched_z(z, heads_at[l], z_new(l))
                mid = h + block.attn.c_proj(z)
                h = mid + self._mlp(l, mid, None, mlps, mlp_new)
        return h

    def _mlp(self, layer, mid, positions, mlps, mlp_new):
        if layer in mlps:
            out = mlp_new(layer)
            return out if positions is None else out[torch.arange(out.shape[0], device=out.device), positions]
        block = self.blocks[layer]
        return _mlp_forward(block.mlp, block.ln_2(mid))

    # --- path patching (edges) -------------------------------------------------------
    def _heads_delta(self, layer: int, heads: list[int], z_new: torch.Tensor,
                     state: RunState | None = None) -> torch.Tensor:
        """Change of the attention output when `heads` output `z_new` instead of their z in
        `state` (the clean run by default): Σ_h (z_new,h − z_h)·W_O,h (those heads' rows of W_O)."""
        w_o = self.blocks[layer].attn.c_proj.weight  # Conv1D: [in, out]
        z = (state or self.clean).z[layer]
        delta = 0
        for h in heads:
            cols = self.head_slice(h)
            delta = delta + (z_new[..., cols] - z[..., cols]) @ w_o[cols]
        return delta

    def sender_delta(self, node: Node, z_new, mlp_new, state: RunState | None = None) -> torch.Tensor:
        """How the residual stream changes when a sender outputs `z_new(layer)` (its head's
        columns) or `mlp_new(layer)` instead of its output in `state` (the clean run by
        default): [N, T, d]."""
        state = state or self.clean
        if node.is_head:
            return self._heads_delta(node.layer, [node.head], z_new(node.layer), state)
        return mlp_new(node.layer) - state.mlp_out[node.layer]

    @torch.no_grad()
    def receivers(self, circuit: set[Node]) -> list[Receiver]:
        """q, k and v of each head of the circuit, each MLP's input, the final residual."""
        heads = sorted(n for n in circuit if n.is_head)
        out = [Receiver(n.layer, port, n.head) for n in heads for port in ("q", "k", "v")]
        out += [Receiver(n.layer, "mlp") for n in sorted(circuit) if not n.is_head]
        return out + [Receiver.final()]

    def patched_path_resid(self, delta: torch.Tensor, receiver: Receiver, positions,
                           state: RunState | None = None) -> torch.Tensor:
        """Final residual at the positions when only `receiver` sees the sender's change
        `delta` on top of `state` (the clean run by default). Everything upstream of the receiver, and the receiver's
        other inputs, keep their `state` values; downstream of it the forward is recomputed
        with `state`'s ablations still in place."""
        state = state or self.clean
        ablation = (state.heads_at, state.mlps, state.z_new, state.mlp_new)
        rows = torch.arange(positions.shape[0], device=positions.device)
        if receiver.port == "resid":
            return (state.resid_final + delta)[rows, positions]
        node = receiver.node
        block = self.blocks[node.layer]
        if not node.is_head:
            mid = state.resid_mid[node.layer]
            h_post = mid + block.mlp(block.ln_2(mid + delta))
            if node.layer == self.n_layers - 1:
                return h_post[rows, positions]
            nxt = node.layer + 1
            mid = self._mid_of(nxt, h_post, state.heads_at.get(nxt), state.z_new)
            return self.continue_from_mid(nxt, mid, positions, *ablation)
        # one head's q, k or v sees the change; the layer's other heads keep their state
        # outputs, so the attention output changes by that head's (z' − z)·W_O,h only
        h = state.resid_pre[node.layer]
        cols = self.head_slice(node.head)
        i = "qkv".index(receiver.port)
        same = block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1)
        patched = block.attn.c_attn(block.ln_1(h + delta)).split(self.d, dim=-1)
        qkv = [x[..., cols] for x in same]
        qkv[i] = patched[i][..., cols]
        z = self._attend_one(*qkv)
        w_o = block.attn.c_proj.weight[cols]
        mid = state.resid_mid[node.layer] + (z - state.z[node.layer][..., cols]) @ w_o
        return self.continue_from_mid(node.layer, mid, positions, *ablation)

    def _attend_one(self, q, k, v):
        """One head's attention: q, k, v [B, T, d_head] → z [B, T, d_head]."""
        z = torch.nn.functional.scaled_dot_product_attention(
            q[:, None], k[:, None], v[:, None], is_causal=True, scale=self.scale)
        return z[:, 0]

    def _mid_of(self, layer: int, h: torch.Tensor, heads=None, z_new=None) -> torch.Tensor:
        block = self.blocks[layer]
        z = self._z(block, h)
        if heads:
            z = self._patched_z(z, heads, z_new(layer))
        return h + block.attn.c_proj(z)

    def _last_attention(self, block, h, positions, heads, z_new):
        """resid_mid of the last block at the prediction positions only."""
        b, t, _ = h.shape
        rows = torch.arange(b, device=h.device)
        q, k, v = block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1)
        q = q[rows, positions].view(b, self.n_heads, 1, self.d_head)
        k = k.view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = v.view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        mask = torch.arange(t, device=h.device)[None, :] <= positions[:, None]  # [b, t]
        z = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], scale=self.scale)
        z = z.reshape(b, self.d)
        if heads:
            z = self._patched_z(z, heads, z_new(self.n_layers - 1)[rows, positions])
        return h[rows, positions] + block.attn.c_proj(z)

    # --- weights the residual probes read (contract.ResidualRunner) ----------------------
    def head_write(self, layer: int, head: int, z: torch.Tensor) -> torch.Tensor:
        cols = self.head_slice(head)
        return z[..., cols] @ self.blocks[layer].attn.c_proj.weight[cols]

    def ov(self, layer: int, head: int, x: torch.Tensor) -> torch.Tensor:
        block, cols = self.blocks[layer], self.head_slice(head)
        w_v = block.attn.c_attn.weight[:, 2 * self.d:]  # [d, d] value columns (Conv1D: [in, out])
        return block.ln_1(x) @ w_v[:, cols] @ block.attn.c_proj.weight[cols]

    def attn_out_bias(self, layer: int) -> torch.Tensor | None:
        return self.blocks[layer].attn.c_proj.bias

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.ln_f(x)

    def frozen_final_norm(self, final_at: torch.Tensor):
        """LayerNorm linearised at `final_at`: (x ↦ (x − mean x) / scale, its weight)."""
        ln = self.model.transformer.ln_f
        centred = final_at - final_at.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
        return (lambda x: (x - x.mean(-1, keepdim=True)) / scale), ln.weight

    def final_norm_bias(self) -> torch.Tensor | None:
        return self.model.transformer.ln_f.bias

    def embed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.transformer.wte.weight[tokens]

    def unembed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head.weight[tokens]

    def metric(self, resid_at: torch.Tensor, prompts, rows: slice | None = None) -> torch.Tensor:
        """The task metric per prompt from final residuals at the positions [N, d] (of the
        prompt rows `rows` when given): a logit difference reads two columns of W_U; other
        metrics need the full logits."""
        x = self.model.transformer.ln_f(resid_at)
        w = self.model.lm_head.weight  # [V, d]
        if prompts.metric == "logit_diff":
            answers = prompts.answers if rows is None else prompts.answers[rows]
            wrongs = prompts.wrong_answers if rows is None else prompts.wrong_answers[rows]
            # read out in float32 from a bf16 model (docs/method.md §3.2); no-ops in float32
            return (x.float() * (w[answers].float() - w[wrongs].float())).sum(-1)
        return task_metric(x @ w.T, prompts, rows=rows)


def _gelu_new_(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's NewGELUActivation (gelu_new, GPT-2's), the same elementwise operations in
    the same order, in place on `x`: bit-identical results (torch.equal with HF on random inputs) with
    one temporary instead of six — the activation was the largest single cost of an analysis."""
    t = torch.pow(x, 3.0)
    t.mul_(0.044715).add_(x).mul_(math.sqrt(2.0 / math.pi)).tanh_().add_(1.0)
    return x.mul_(0.5).mul_(t)


def _mlp_forward(mlp, x: torch.Tensor) -> torch.Tensor:
    """`mlp(x)` for a Hugging Face GPT2MLP in eval mode, its gelu_new in place; any other MLP
    (or one in training mode) runs as it is."""
    from transformers.activations import NewGELUActivation
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP
    if type(mlp) is GPT2MLP and type(mlp.act) is NewGELUActivation and not mlp.training:
        return mlp.dropout(mlp.c_proj(_gelu_new_(mlp.c_fc(x))))
    return mlp(x)
