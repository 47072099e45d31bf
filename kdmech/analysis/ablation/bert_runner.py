"""A faster exact ablation path for BERT (post-LayerNorm encoders with an MLM head).

The reference (`ablation.ablated_metric`) runs one full bridge forward per ablation set. An
ablation at layer l cannot change what enters layers 0..l, so this runner caches the clean
hidden states entering every layer and starts each ablated forward at the first ablated
layer, running Hugging Face's own modules (the bridge wraps the same modules: its logits equal
Hugging Face's bit for bit, both in eager attention, which the bridge sets). Ablations replace what
the bridge's hooks see:
`blocks.{l}.attn.hook_z` is the input of `attention.output.dense` (heads concatenated) and
`blocks.{l}.hook_mlp_out` the output of `output.dense`, before the residual sum and the
block's LayerNorm. Forwards take the reference's batches (64 prompt rows, fewer under a
memory budget) and its MLM head reads every position before the answer positions are
picked, so each forward has the reference's shapes and gives its numbers
(tests/test_bert_runner.py).

Path patching and the residual probes are not offered: BERT's residual stream is not
additive (`ModelFamily.additive_residual`), so the engine refuses them before asking here.
"""

from __future__ import annotations

import copy

import torch

from kdmech.analysis.ablation.contract import readout_at
from kdmech.analysis.ablation.reference import row_chunks
from kdmech.analysis.nodes import Node
from kdmech.tasks.metric import task_metric

REFERENCE_BATCH = 64
"""Prompt rows per forward of the reference path (`ablation.logits_at`)."""


def supported(model) -> bool:
    return type(model).__name__ == "BertForMaskedLM"


def make(model, clean: torch.Tensor, batch_rows: int | None = None) -> "BertRunner | None":
    """The registry's factory (`runners.register_runner`)."""
    return BertRunner(model, clean, batch_rows) if supported(model) else None


class BertRunner:
    """A `contract.Runner` over a Hugging Face BertForMaskedLM: its read-out is the MLM head's
    logits."""

    def __init__(self, model, clean: torch.Tensor, batch_rows: int | None = None):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model.set_attn_implementation("eager")  # the bridge runs its copy in eager attention
        self.layers = self.model.bert.encoder.layer
        self.n_layers = len(self.layers)
        self.n_heads = self.model.config.num_attention_heads
        n = clean.shape[0]
        self.chunks = row_chunks(n, min(batch_rows or n, REFERENCE_BATCH))
        hidden: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        logits = []
        grabs = [layer.register_forward_pre_hook(lambda mod, args, l=l: hidden[l].append(args[0]))
                 for l, layer in enumerate(self.layers)]
        try:
            with torch.no_grad():
                for sl in self.chunks:
                    ids = clean[sl]
                    logits.append(self.model(ids, attention_mask=torch.ones_like(ids)).logits)
        finally:
            for g in grabs:
                g.remove()
        self.hidden = [torch.cat(h) for h in hidden]
        """The clean hidden states entering each layer, [N, T, d]."""
        self.clean_logits = torch.cat(logits)
        """The clean logits [N, T, V]."""

    def _hooks(self, heads: dict[int, list[int]], z: dict, mlp: dict, rows: slice) -> list:
        """Hooks on Hugging Face's modules that ablate, for prompt rows `rows`, the heads
        `heads[layer]` (outputs from `z[layer]`, [N, T, d]) and the MLPs of `mlp` ([N, T, d])."""
        handles = []
        for layer, new in mlp.items():
            handles.append(self.layers[layer].output.dense.register_forward_hook(
                lambda mod, args, out, new=new[rows]: new.clone()))
        for layer, hs in heads.items():
            attn = self.layers[layer].attention

            def patch(mod, args, new=z[layer][rows], hs=hs, n_heads=attn.self.num_attention_heads):
                x = args[0].clone()
                view, repl = x.view(*x.shape[:2], n_heads, -1), new.view(*new.shape[:2], n_heads, -1)
                view[:, :, hs] = repl[:, :, hs]
                return (x,)
            handles.append(attn.output.dense.register_forward_pre_hook(patch))
        return handles

    def clean_readout(self, positions: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """The clean logits at each prompt's position [n, V]."""
        return readout_at(self.clean_logits if rows is None else self.clean_logits[rows], positions)

    @torch.no_grad()
    def ablated_readout(self, nodes: list[Node], positions: torch.Tensor, z_new, mlp_new,
                       rows: slice | None = None) -> torch.Tensor:
        """Logits at each prompt's position [n, V] with `nodes` ablated (replacements
        `z_new(layer)` [N, T, d] and `mlp_new(layer)` [N, T, d]); with `rows`, for those
        prompt rows only (`positions` are theirs)."""
        heads: dict[int, list[int]] = {}
        for node in nodes:
            if node.is_head:
                heads.setdefault(node.layer, []).append(node.head)
        z = {layer: z_new(layer) for layer in heads}  # each replacement made once per call
        mlp = {node.layer: mlp_new(node.layer) for node in nodes if not node.is_head}
        start = min(n.layer for n in nodes)
        base = rows.start if rows is not None else 0
        stop = rows.stop if rows is not None else self.hidden[0].shape[0]
        out = []
        for sl in self.chunks:
            lo, hi = max(sl.start, base), min(sl.stop, stop)
            if lo >= hi:
                continue
            handles = self._hooks(heads, z, mlp, slice(lo, hi))
            try:
                h = self.hidden[start][lo:hi]
                for layer in self.layers[start:]:
                    h = layer(h)
                    h = h[0] if isinstance(h, tuple) else h
                logits = self.model.cls(h)
            finally:
                for handle in handles:
                    handle.remove()
            at = positions[lo - base:hi - base]
            out.append(logits[torch.arange(hi - lo, device=logits.device), at])
        return torch.cat(out)

    def metric(self, logits_at: torch.Tensor, prompts, rows: slice | None = None) -> torch.Tensor:
        return task_metric(logits_at, prompts, rows=rows)
