"""The fast ablation engine: exact LDs for many ablation sets (docs/method.md §3).

`ablated_metric_mean` in `ablation.py` is the plain reference: one full forward per ablation
set, full-vocabulary logits. The engine gives the same numbers faster:

- the clean residual stream entering every block is cached once, so a forward starts at the
  first ablated layer (TransformerLens' `start_at_layer`) instead of recomputing the layers
  below it, which an ablation cannot change;
- the forward stops after the last block, and only the prediction positions go through the
  final LayerNorm and unembedding;
- ablation sets that start at the same layer share one forward: copies of the prompts are
  stacked in the batch, each copy with its own ablation (`max_rows` bounds the batch; on a
  CPU stacking is slower than looping, so it is off there by default).

The engine picks one strategy when it is built (`Strategy`): a fast runner registered for the
model's family (`runners.runner_for`; the contract is `contract.Runner`): GPT-2's
`gpt2_runner` starts inside the first ablated block and computes the last block at the
prediction positions only, BERT's `bert_runner` starts at the first ablated layer with the
reference's batches and MLM head; else the bridge's start-at-layer forwards described above;
else, for a family whose bridge cannot start at a layer, the reference itself, one full forward
per ablation set.

Path patching and the residual probes read a `contract.ResidualRunner`'s cached forwards; they
run only where the family declares an additive residual stream, and an engine built without its
runner builds it for them on demand (the same runner, so the same numbers).

A memory budget (`max_batch_tokens`, `AnalysisOptions.max_batch_tokens`) splits the prompts
into row slices of at most max(1, budget // seq_len) rows: cached forwards are computed a
slice at a time, every ablated forward runs on one slice (stacked copies counted), and the
per-prompt metrics are concatenated. Mean ablation keeps the means over every corrupted
prompt, so the numbers are those of the unbudgeted engine up to float rounding.

The engine runs where the model is: its prompts are moved to the model's device
(`PromptSet.for_model`) and every tensor it makes takes its device from them or from the
activations (tests/test_device.py).
"""

from __future__ import annotations

from collections import defaultdict
from enum import Enum
from typing import Callable

import torch

from kdmech.analysis.ablation.contract import ResidualRunner, Runner
from kdmech.analysis.ablation.reference import (AblationKind, CorruptedActivations, ablated_metric,
                                                corrupted_activations, row_chunks, zero_replacement)
from kdmech.analysis.ablation.run_state import RunState
from kdmech.analysis.ablation.runners import runner_for
from kdmech.analysis.bridge import Bridged
from kdmech.analysis.nodes import Node
from kdmech.errors import KdmechError
from kdmech.tasks.metric import task_metric
from kdmech.tasks.prompt_set import PromptSet, batch_rows


class Strategy(str, Enum):
    """How an engine computes ablated metrics, picked once when it is built."""
    RUNNER = "runner"
    """The family's registered fast runner (`contract.Runner`)."""
    BRIDGE = "bridge"
    """Cached clean residuals and the bridge's start-at-layer forwards, stacked copies."""
    REFERENCE = "reference"
    """One full bridge forward per ablation set (`reference.ablated_metric`)."""


class _Stop(Exception):
    """Raised by a hook to end a forward once the last block's output is captured."""


class AblationEngine:
    def __init__(self, bridged: Bridged, prompts: PromptSet,
                 kind: AblationKind = AblationKind.MEAN,
                 source: CorruptedActivations | None = None, max_rows: int | None = None,
                 fast_path: bool = True, max_batch_tokens: int = 0, value_bias: list | None = None):
        self.bridged, self.prompts = bridged, prompts.for_model(bridged.bridge)
        self.value_bias = value_bias
        """Zero ablation writes each head's value bias, per layer [heads, d_head]
        (`ablation.value_bias`); None: zeros."""
        prompts = self.prompts
        self.kind, self.source = AblationKind(kind), source
        self._paired: CorruptedActivations | None = None
        self.max_batch_tokens = max_batch_tokens
        n, t = len(prompts), prompts.seq_len
        self.chunk_rows = batch_rows(max_batch_tokens, t, n)
        """Prompt rows of one slice (all of them without a budget)."""
        self.row_chunks = row_chunks(n, self.chunk_rows)
        self.batch_size = batch_rows(max_batch_tokens, t, 64)
        """Prompt rows per forward of the reference path and the corrupted run."""
        on_gpu = prompts.clean.is_cuda
        # rows of one bridge forward of stacked copies: the budget counts every copy
        self.max_rows = batch_rows(max_batch_tokens, t, max(max_rows or (4096 if on_gpu else 0),
                                                            self.chunk_rows))
        self.n_layers = bridged.n_layers
        self.family = bridged.family
        self.runner: Runner | None = self._fast_runner() if fast_path else None
        self._residual_runner, self._residual_tried = self.runner, self.runner is not None
        if self.runner is not None:
            self.strategy = Strategy.RUNNER
        elif self.family.start_at_layer:
            self.strategy = Strategy.BRIDGE
        else:  # no start-at-layer shortcut (post-LayerNorm encoders' MLM head)
            self.strategy = Strategy.REFERENCE
        if self.strategy is not Strategy.BRIDGE:  # they need no cached bridge residuals
            self.full_metric = self._intact().mean().item()
            return
        names = [f"blocks.{l}.hook_resid_pre" for l in range(self.n_layers)]
        names += [f"blocks.{self.n_layers - 1}.hook_resid_post"]
        parts = []
        with torch.no_grad():
            for sl in self.row_chunks:
                _, cache = bridged.bridge.run_with_cache(prompts.clean[sl], names_filter=lambda n: n in names)
                parts.append([cache[n] for n in names])
        cached = [p[0] if len(parts) == 1 else torch.cat(p) for p in zip(*parts)]
        self.resid_pre = cached[:-1]
        self.resid_final = cached[-1]
        self.full_metric = self._intact().mean().item()

    def _fast_runner(self):
        """The family's fast runner over these prompts, its forwards within the budget."""
        return runner_for(self.family.name, self.bridged.model, self.prompts.clean, self.chunk_rows)

    # --- reading the answer off a final residual stream -------------------------------
    def metrics_from_resid(self, resid: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Per-row LD from final residuals [k·N, T, d] (k stacked copies of the prompts, or
        of the prompt rows `rows`)."""
        positions = self.prompts.positions if rows is None else self.prompts.positions[rows]
        reps = resid.shape[0] // positions.shape[0]
        pos = positions.repeat(reps)
        at = resid[torch.arange(resid.shape[0], device=resid.device), pos]
        bridge = self.bridged.bridge
        return task_metric(bridge.unembed(bridge.ln_final(at[:, None]))[:, 0], self.prompts, rows)

    @torch.no_grad()
    def run_from(self, layer: int, resid: torch.Tensor, hooks: list) -> torch.Tensor:
        """Final residual after running blocks layer..L−1 on `resid` with `hooks`."""
        captured = {}

        def grab(act, hook):
            captured["resid"] = act
            raise _Stop

        last = f"blocks.{self.n_layers - 1}.hook_resid_post"
        try:
            self.bridged.bridge.run_with_hooks(resid, start_at_layer=layer,
                                               fwd_hooks=[*hooks, (last, grab)])
        except _Stop:
            pass
        return captured["resid"]

    # --- ablation --------------------------------------------------------------------
    def replacement(self, hook_name: str) -> torch.Tensor:
        """What an ablated node's activation becomes, per prompt: [N, T, ...] (hook shape)."""
        n = len(self.prompts)
        if self.kind is AblationKind.RESAMPLE:
            return self.source.full[hook_name]
        if self.kind is AblationKind.MEAN:
            mean = self.source.means[hook_name]
            return mean.expand(n, *mean.shape)
        shape = self.source.means[hook_name].shape if self.source else None
        if shape is None:  # zero ablation needs no corrupted run: take the shape from the cache
            t = self.prompts.seq_len
            shape = ((t, self.bridged.n_heads, self.bridged.d_model // self.bridged.n_heads)
                     if hook_name.endswith("hook_z") else (t, self.bridged.d_model))
        return zero_replacement(torch.empty(n, *shape, device=self.prompts.device), hook_name, self.value_bias)

    def _hooks(self, sets: list[list[Node]], rows: slice | None = None) -> list:
        """Hooks that ablate sets[j] in rows j·N … (j+1)·N of a stacked batch (N: the prompts,
        or the prompt rows `rows`)."""
        n = len(self.prompts) if rows is None else rows.stop - rows.start
        edits: dict[str, list] = defaultdict(list)
        for j, nodes in enumerate(sets):
            by_hook: dict[str, list] = defaultdict(list)
            for node in nodes:
                by_hook[node.hook].append(node.head)
            for name, heads in by_hook.items():
                edits[name].append((slice(j * n, (j + 1) * n), [h for h in heads if h is not None]))

        def make(name, todo):
            def hook(act, hook):
                act = act.clone()
                new = self.replacement(name)
                if rows is not None:
                    new = new[rows]
                for stacked, heads in todo:
                    if heads:
                        act[stacked, :, heads] = new[:, :, heads]
                    else:
                        act[stacked] = new
                return act
            return hook

        return [(name, make(name, todo)) for name, todo in edits.items()]

    def _z_new(self, layer: int) -> torch.Tensor:
        """Replacement head outputs of a layer, heads concatenated: [N, T, d]."""
        return self.replacement(f"blocks.{layer}.attn.hook_z").flatten(2)

    def _mlp_new(self, layer: int) -> torch.Tensor:
        return self.replacement(f"blocks.{layer}.hook_mlp_out")

    def paired_corrupted(self) -> CorruptedActivations:
        """Corrupted activations paired row by row with the prompts (`full` is [N, T, ...]):
        the source's when it keeps them for these prompts, else one run over the prompts'
        corrupted set, kept for later calls. Path patching needs them whatever the ablation
        kind; a mean or zero ablation source usually keeps only means."""
        src, n = self.source, len(self.prompts)
        if src is not None and src.full and all(v.shape[0] == n for v in src.full.values()):
            return src
        if self._paired is None:
            self._paired = corrupted_activations(self.bridged, self.prompts, keep_full=True,
                                                 batch_size=self.batch_size)
        return self._paired

    # --- analyses that read the residual stream as a sum (edges, DLA, OV probes) -------
    def residual_refusal(self, what: str) -> str:
        """Why `what` cannot run on this model ('' when it can): the family declares no
        additive residual stream, or its fast path (which `what` reads) does not cover it."""
        if not self.family.additive_residual:
            return self.family.refusal(what)
        if not self._residual_tried:  # an engine built without its fast path builds it now
            self._residual_tried = True
            self._residual_runner = self._fast_runner()
        if self._residual_runner is None:
            return (f"{what} reads the {self.family.name} family's fast path, which does not "
                    f"cover this model's config")
        return ""

    def residual_runner(self, what: str) -> ResidualRunner:
        """The fast path's runner (clean caches, weights, path patching) for `what`;
        a `KdmechError` with the reason when `residual_refusal` gives one."""
        reason = self.residual_refusal(what)
        if reason:
            raise KdmechError(reason)
        return self._residual_runner

    def ablated_state(self, nodes: list[Node], ids: torch.Tensor | None = None) -> RunState:
        """The runner's cached forward over the clean prompts (or `ids`, e.g. the corrupted
        ones) with `nodes` ablated (this engine's kind)."""
        runner = self.residual_runner("path patching")
        return runner.ablated_state(nodes, self._z_new, self._mlp_new, ids=ids)

    def _intact(self) -> torch.Tensor:
        """Per-prompt metric of the intact model."""
        if self.strategy is Strategy.REFERENCE:
            return ablated_metric(self.bridged, self.prompts, [], self.kind, self.source, self.batch_size,
                                  self.value_bias)
        if self.strategy is Strategy.RUNNER:
            positions = self.prompts.positions
            return chunked_metric(self.runner, lambda sl: self.runner.clean_readout(
                positions if sl is None else positions[sl], sl), self.prompts, self.row_chunks)
        if len(self.row_chunks) == 1:
            return self.metrics_from_resid(self.resid_final)
        return torch.cat([self.metrics_from_resid(self.resid_final[sl], sl) for sl in self.row_chunks])

    def _ablated(self, nodes: list[Node]) -> torch.Tensor:
        """Per-prompt metric with `nodes` (non-empty) ablated, by the runner or the reference."""
        if self.strategy is Strategy.REFERENCE:
            return ablated_metric(self.bridged, self.prompts, nodes, self.kind, self.source, self.batch_size,
                                  self.value_bias)
        positions = self.prompts.positions
        return chunked_metric(self.runner, lambda sl: self.runner.ablated_readout(
            nodes, positions if sl is None else positions[sl], self._z_new, self._mlp_new, rows=sl),
            self.prompts, self.row_chunks)

    @torch.no_grad()
    def metrics(self, sets: list[list[Node]], per_prompt: bool = False) -> list:
        """Mean LD (or per-prompt LDs, with `per_prompt`) for each ablation set, each set
        ablated at once from the full model."""
        if self.strategy is Strategy.BRIDGE:
            return self._bridge_metrics(sets, per_prompt)
        out = []
        for nodes in sets:
            lds = self._ablated(nodes) if nodes else self._intact()
            out.append(lds if per_prompt else lds.mean().item())
        return out

    def _bridge_metrics(self, sets: list[list[Node]], per_prompt: bool) -> list:
        """`metrics` by start-at-layer bridge forwards: sets that start at one layer share a
        forward of stacked copies."""
        out: list = [None] * len(sets)
        by_start: dict[int, list[int]] = defaultdict(list)
        for i, nodes in enumerate(sets):
            if not nodes:
                lds = self._intact()
                out[i] = lds if per_prompt else lds.mean().item()
            else:
                by_start[min(node.layer for node in nodes)].append(i)
        whole = len(self.row_chunks) == 1
        parts: dict[int, list] = defaultdict(list)  # per set, its LDs slice by slice
        for sl in self.row_chunks:
            n = sl.stop - sl.start
            rows = None if whole else sl
            per_forward = max(1, self.max_rows // n)
            for layer, idx in by_start.items():
                for k in range(0, len(idx), per_forward):
                    chunk = idx[k:k + per_forward]
                    resid = self.resid_pre[layer][sl].repeat(len(chunk), 1, 1)
                    final = self.run_from(layer, resid, self._hooks([sets[i] for i in chunk], rows))
                    lds = self.metrics_from_resid(final, rows).view(len(chunk), n)
                    for j, i in enumerate(chunk):
                        parts[i].append(lds[j])
        for i, lds in parts.items():
            lds = lds[0] if whole else torch.cat(lds)
            out[i] = lds if per_prompt else lds.mean().item()
        return out

    def metric(self, nodes: list[Node]) -> float:
        return self.metrics([nodes])[0]


def chunked_metric(runner: Runner, readout: Callable[[slice | None], torch.Tensor], prompts: PromptSet,
                   chunks: list[slice]) -> torch.Tensor:
    """Per-prompt metric of a runner's read-outs, one slice of prompt rows at a time:
    `readout(rows)` gives the read-out of those rows (None: all of them, the one-slice case)."""
    if len(chunks) == 1:
        return runner.metric(readout(None), prompts)
    return torch.cat([runner.metric(readout(sl), prompts, rows=sl) for sl in chunks])
