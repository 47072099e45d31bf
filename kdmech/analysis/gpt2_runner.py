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
"""

from __future__ import annotations

import copy
import math

import torch

from kdmech.analysis.nodes import Node
from kdmech.tasks.metric import task_metric


def supported(model) -> bool:
    c = model.config
    return (c.model_type == "gpt2" and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
            and not getattr(c, "reorder_and_upcast_attn", False))


class GPT2Runner:
    def __init__(self, model, clean: torch.Tensor):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        c = self.model.config
        self.n_layers, self.n_heads, self.d = c.n_layer, c.n_head, c.n_embd
        self.d_head = self.d // self.n_heads
        self.scale = 1 / math.sqrt(self.d_head) if c.scale_attn_weights else 1.0
        self.blocks = self.model.transformer.h
        self.resid_pre, self.resid_mid, self.z = [], [], []
        with torch.no_grad():
            h = self.model.transformer.wte(clean) + self.model.transformer.wpe(
                torch.arange(clean.shape[1]))[None]
            for block in self.blocks:
                self.resid_pre.append(h)
                z = self._z(block, h)
                self.z.append(z)
                mid = h + block.attn.c_proj(z)
                self.resid_mid.append(mid)
                h = mid + block.mlp(block.ln_2(mid))
        self.resid_final = h

    def _z(self, block, h):
        """Heads' outputs before W_O, concatenated: [B, T, d] (HF's c_proj input)."""
        return self._attend(*block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1))

    def _attend(self, q, k, v):
        b, t, _ = q.shape
        split = lambda x: x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
        z = torch.nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), is_causal=True, scale=self.scale)
        return z.transpose(1, 2).reshape(b, t, self.d)

    def _head_slice(self, head: int) -> slice:
        return slice(head * self.d_head, (head + 1) * self.d_head)

    def _patched_z(self, z, heads, z_new):
        z = z.clone()
        for h in heads:
            z[..., self._head_slice(h)] = z_new[..., self._head_slice(h)]
        return z

    @torch.no_grad()
    def final_resid_at(self, nodes: list[Node], positions: torch.Tensor, z_new, mlp_new) -> torch.Tensor:
        """Residual after the last block at each prompt's position, with `nodes` ablated.
        `z_new(layer)` → replacement head outputs [N, T, d]; `mlp_new(layer)` → [N, T, d]."""
        heads_at: dict[int, list[int]] = {}
        mlps = set()
        for node in nodes:
            if node.is_head:
                heads_at.setdefault(node.layer, []).append(node.head)
            else:
                mlps.add(node.layer)
        start = min(n.layer for n in nodes)
        # exact: the first ablated block's input is clean, so only its replaced heads change
        mid = self.resid_mid[start]
        if start in heads_at:
            mid = mid + self._heads_delta(start, heads_at[start], z_new(start))
        return self.continue_from_mid(start, mid, positions, heads_at, mlps, z_new, mlp_new)

    def continue_from_mid(self, layer: int, mid: torch.Tensor, positions: torch.Tensor,
                          heads_at=None, mlps=(), z_new=None, mlp_new=None) -> torch.Tensor:
        """Finish block `layer` from its residual after attention, run the rest; returns the
        final residual at the positions [N, d]. Ablations as in `final_resid_at`."""
        heads_at = heads_at or {}
        rows = torch.arange(positions.shape[0])
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
            return out if positions is None else out[torch.arange(out.shape[0]), positions]
        block = self.blocks[layer]
        return block.mlp(block.ln_2(mid))

    # --- path patching (edges) -------------------------------------------------------
    def _heads_delta(self, layer: int, heads: list[int], z_new: torch.Tensor) -> torch.Tensor:
        """Change of the attention output when `heads` output `z_new` instead of their clean
        z: Σ_h (z_new,h − z_h)·W_O,h (only those heads' rows of W_O)."""
        w_o = self.blocks[layer].attn.c_proj.weight  # Conv1D: [in, out]
        z = self.z[layer]
        delta = 0
        for h in heads:
            cols = self._head_slice(h)
            delta = delta + (z_new[..., cols] - z[..., cols]) @ w_o[cols]
        return delta

    def sender_delta(self, node: Node, z_new, mlp_new) -> torch.Tensor:
        """How replacing a sender's output changes the residual stream: [N, T, d]."""
        if node.is_head:
            return self._heads_delta(node.layer, [node.head], z_new(node.layer))
        clean_out = self.resid_pre[node.layer + 1] - self.resid_mid[node.layer] \
            if node.layer + 1 < self.n_layers else self.resid_final - self.resid_mid[node.layer]
        return mlp_new(node.layer) - clean_out

    @torch.no_grad()
    def patched_path_resid(self, delta: torch.Tensor, receiver: str, positions) -> torch.Tensor:
        """Final residual at the positions when only `receiver` sees the sender's change
        `delta`. Receiver: "L{l}.H{h}.q|k|v", "L{l}.MLP" or "resid_final"."""
        rows = torch.arange(positions.shape[0])
        if receiver == "resid_final":
            return (self.resid_final + delta)[rows, positions]
        node_name, _, port = receiver.rpartition(".") if receiver.count(".") == 2 else (receiver, "", "")
        node = Node.parse(node_name)
        if not node.is_head:
            block = self.blocks[node.layer]
            mid = self.resid_mid[node.layer]
            mlp_out = block.mlp(block.ln_2(mid + delta))
            h_post = mid + mlp_out
            if node.layer == self.n_layers - 1:
                return h_post[rows, positions]
            return self.continue_from_mid(node.layer + 1, self._mid_of(node.layer + 1, h_post), positions)
        block = self.blocks[node.layer]
        h = self.resid_pre[node.layer]
        clean = block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1)
        patched = block.attn.c_attn(block.ln_1(h + delta)).split(self.d, dim=-1)
        cols = self._head_slice(node.head)
        qkv = [x.clone() for x in clean]
        i = "qkv".index(port)
        qkv[i][..., cols] = patched[i][..., cols]
        z = self._attend(*qkv)
        mid = h + block.attn.c_proj(z)
        return self.continue_from_mid(node.layer, mid, positions)

    def _mid_of(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        block = self.blocks[layer]
        return h + block.attn.c_proj(self._z(block, h))

    def _last_attention(self, block, h, positions, heads, z_new):
        """resid_mid of the last block at the prediction positions only."""
        b, t, _ = h.shape
        rows = torch.arange(b)
        q, k, v = block.attn.c_attn(block.ln_1(h)).split(self.d, dim=-1)
        q = q[rows, positions].view(b, self.n_heads, 1, self.d_head)
        k = k.view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = v.view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        mask = torch.arange(t)[None, :] <= positions[:, None]  # [b, t]
        z = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], scale=self.scale)
        z = z.reshape(b, self.d)
        if heads:
            z = self._patched_z(z, heads, z_new(self.n_layers - 1)[rows, positions])
        return h[rows, positions] + block.attn.c_proj(z)

    def metric_from_final(self, resid_at: torch.Tensor, prompts) -> torch.Tensor:
        """The task metric per prompt from final residuals at the positions [N, d]: a logit
        difference reads two columns of W_U; other metrics need the full logits."""
        x = self.model.transformer.ln_f(resid_at)
        w = self.model.lm_head.weight  # [V, d]
        if prompts.metric == "logit_diff":
            return (x * (w[prompts.answers] - w[prompts.wrong_answers])).sum(-1)
        return task_metric(x @ w.T, prompts)
