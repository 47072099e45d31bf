"""The fast exact ablation runner of the Llama family (Llama, Mistral, Qwen2, Qwen3).

It runs Hugging Face's own decoder layers of a private eval copy, in eager attention as the
bridge does, with the rotary position embeddings, masks and position ids that the model's
own forward passes each layer (recorded from one forward per batch size by a hook on every
decoder layer, so Mistral's sliding window, Qwen's per-layer masks and Llama 3's rope
scaling come as Hugging Face makes them). Ablations replace what the bridge's hooks see:
`blocks.{l}.attn.hook_z` is the input of `self_attn.o_proj` ([.., n_heads·head_dim], query
heads in order — under grouped-query attention a head is a query head), and
`blocks.{l}.hook_mlp_out` the output of `mlp`.

Node ablation caches the clean residual entering every layer and starts each ablated forward
at the first ablated layer. Forwards take the reference's batches (64 prompt rows, aligned as
the reference's, fewer under a memory budget), so every read-out equals the reference's full
forward bit for bit (tests/test_llama_runner.py).

Path patching (`ResidualRunner`) under GQA: a receiver is the q input of a query head, the k
or v input of a KV group (shared by the group's query heads: one receiver per group), an
MLP's input or the final residual. The receiving projection's columns of that head or group
are recomputed from (the layer's input norm of) state residual + sender change, everything
else of the layer from the state's residual; downstream the forward reruns with the state's
ablations in place (docs/method.md §5.2, §3.2).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from kdmech.analysis.ablation.contract import readout_at
from kdmech.analysis.ablation.run_state import RunState, keep, rows_of
from kdmech.analysis.edges import Receiver
from kdmech.analysis.nodes import Node, ablation_plan
from kdmech.tasks.metric import task_metric

REFERENCE_BATCH = 64
"""Prompt rows per forward of the reference path (`reference.logits_at`)."""
MODELS = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def supported(model) -> bool:
    """A Llama-layout causal LM whose final norm is an RMSNorm without bias."""
    if type(model).__name__ not in MODELS:
        return False
    norm = model.model.norm
    return hasattr(norm, "variance_epsilon") and getattr(norm, "bias", None) is None


def make(model, clean: torch.Tensor, batch_rows: int | None = None) -> "LlamaRunner | None":
    """The registry's factory (`runners.register_runner`)."""
    return LlamaRunner(model, clean, batch_rows) if supported(model) else None


@dataclass
class _Plan:
    """What the hooks do during one forward."""

    heads_at: dict[int, list[int]] = field(default_factory=dict)
    mlps: set[int] = field(default_factory=set)
    z_new: Callable | None = None
    mlp_new: Callable | None = None
    record: dict[str, dict[int, torch.Tensor]] | None = None
    """When set: resid_pre, z, resid_mid, mlp_out by layer and "final" (the norm's input)."""
    projection: tuple[int, str, slice, torch.Tensor] | None = None
    """(layer, "q"|"k"|"v", columns, projected input): those columns of that projection's output."""
    mlp_input: tuple[int, torch.Tensor] | None = None
    """(layer, input): that layer's MLP reads this instead."""
    kwargs: list[dict] | None = None
    """When set, filled with each decoder layer's keyword arguments."""


class LlamaRunner:
    """A `contract.ResidualRunner` over a Hugging Face Llama-layout causal LM."""

    def __init__(self, model, clean: torch.Tensor, batch_rows: int | None = None):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.model.set_attn_implementation("eager")  # the bridge runs its copy in eager attention
        c = self.model.config
        self.layers = self.model.model.layers
        self.n_layers, self.n_heads = len(self.layers), c.num_attention_heads
        self.n_kv = getattr(c, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(c, "head_dim", None) or c.hidden_size // self.n_heads
        self.per_group = self.n_heads // self.n_kv
        self.clean_ids = clean
        self.rows_per_forward = min(batch_rows or clean.shape[0], REFERENCE_BATCH)
        self._plan = _Plan()
        self._kwargs: dict[int, list[dict]] = {}
        self._install_hooks()
        self.clean = self.ablated_state([])
        self.resid_pre, self.resid_mid, self.z = self.clean.resid_pre, self.clean.resid_mid, self.clean.z
        self.resid_final = self.clean.resid_final

    # --- hooks on Hugging Face's modules, driven by self._plan ---------------------------
    def _install_hooks(self) -> None:
        for l, layer in enumerate(self.layers):
            layer.register_forward_pre_hook(lambda m, a, k, l=l: self._layer_in(l, a, k), with_kwargs=True)
            attn = layer.self_attn
            attn.o_proj.register_forward_pre_hook(lambda m, a, l=l: self._o_proj_in(l, a[0]))
            for port in "qkv":
                getattr(attn, f"{port}_proj").register_forward_hook(
                    lambda m, a, out, l=l, port=port: self._projected(l, port, out))
            layer.post_attention_layernorm.register_forward_pre_hook(
                lambda m, a, l=l: self._remember("resid_mid", l, a[0]))
            layer.mlp.register_forward_pre_hook(lambda m, a, l=l: self._mlp_in(l))
            layer.mlp.register_forward_hook(lambda m, a, out, l=l: self._mlp_out(l, out))
        self.model.model.norm.register_forward_pre_hook(lambda m, a: self._remember("final", 0, a[0]))

    def _remember(self, what: str, layer: int, x: torch.Tensor) -> None:
        if self._plan.record is not None:
            self._plan.record.setdefault(what, {})[layer] = x

    def _layer_in(self, layer: int, args, kwargs):
        if self._plan.kwargs is not None:
            self._plan.kwargs.append(dict(kwargs))
        self._remember("resid_pre", layer, args[0])

    def _o_proj_in(self, layer: int, z: torch.Tensor):
        heads = self._plan.heads_at.get(layer)
        if heads:
            z, new = z.clone(), self._plan.z_new(layer)
            for h in heads:
                z[..., self.head_slice(h)] = new[..., self.head_slice(h)]
        self._remember("z", layer, z)
        return (z,)

    def _projected(self, layer: int, port: str, out: torch.Tensor):
        p = self._plan.projection
        if p is None or p[0] != layer or p[1] != port:
            return None
        out = out.clone()
        out[..., p[2]] = p[3][..., p[2]]
        return out

    def _mlp_in(self, layer: int):
        p = self._plan.mlp_input
        return (p[1],) if p is not None and p[0] == layer else None

    def _mlp_out(self, layer: int, out: torch.Tensor):
        if layer in self._plan.mlps:
            out = self._plan.mlp_new(layer).expand_as(out).clone()
        self._remember("mlp_out", layer, out)
        return out

    @contextmanager
    def _planned(self, plan: _Plan):
        self._plan = plan
        try:
            yield plan
        finally:
            self._plan = _Plan()

    # --- forwards ----------------------------------------------------------------------
    def head_slice(self, head: int) -> slice:
        """A query head's columns in o_proj's input (and of q_proj's output)."""
        return slice(head * self.d_head, (head + 1) * self.d_head)

    def group_slice(self, group: int) -> slice:
        """A KV group's columns of k_proj's and v_proj's outputs."""
        return slice(group * self.d_head, (group + 1) * self.d_head)

    def _pieces(self, base: slice) -> list[slice]:
        """`base` cut where the reference cuts its batches (every `rows_per_forward` rows)."""
        step, out, i = self.rows_per_forward, [], base.start
        while i < base.stop:
            j = min(base.stop, (i // step + 1) * step)
            out.append(slice(i, j))
            i = j
        return out

    def layer_kwargs(self, n: int) -> list[dict]:
        """Each decoder layer's keyword arguments (masks, rotary embeddings, position ids) for
        a forward of n prompt rows, recorded from the model's own forward; they do not depend
        on the token ids (no padding mask)."""
        if n not in self._kwargs:
            with self._planned(_Plan(kwargs=[])) as plan, torch.no_grad():
                self.model.model(input_ids=self.clean_ids[:n], use_cache=False)
            self._kwargs[n] = plan.kwargs
        return self._kwargs[n]

    def _run(self, start: int, h: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """Decoder layers start..L−1 on residual h under `plan`: the final residual (before the norm)."""
        kwargs = self.layer_kwargs(h.shape[0])
        with self._planned(plan):
            for l in range(start, self.n_layers):
                h = self.layers[l](h, **kwargs[l])
        return h

    @torch.no_grad()
    def ablated_state(self, nodes: list[Node], z_new=None, mlp_new=None, ids=None) -> RunState:
        """One forward of the model's own over the clean prompts (or `ids` of the same shape,
        e.g. the corrupted ones) with `nodes` ablated, every activation path patching needs
        cached (`RunState`), a reference batch at a time."""
        ids = self.clean_ids if ids is None else ids
        heads_at, mlps = ablation_plan(nodes)
        state = RunState([], [], [], [], None, heads_at, mlps, z_new, mlp_new)
        n, final = self.clean_ids.shape[0], []
        for sl in self._pieces(slice(0, n)):
            plan = _Plan(heads_at, mlps, rows_of(z_new, sl), rows_of(mlp_new, sl), record={})
            with self._planned(plan):
                self.model.model(input_ids=ids[sl], use_cache=False)
            rec = plan.record
            for l in range(self.n_layers):
                for cache, what in ((state.resid_pre, "resid_pre"), (state.resid_mid, "resid_mid"),
                                    (state.z, "z"), (state.mlp_out, "mlp_out")):
                    keep(cache, rec[what][l], l, sl, n)
            keep(final, rec["final"][0], 0, sl, n)
        state.resid_final = final[0]
        return state

    def clean_readout(self, positions: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        final = self.resid_final if rows is None else self.resid_final[rows]
        return readout_at(final, positions)

    @torch.no_grad()
    def ablated_readout(self, nodes: list[Node], positions: torch.Tensor, z_new, mlp_new,
                        rows: slice | None = None) -> torch.Tensor:
        """The final residual at the positions with `nodes` ablated, from the clean residual
        entering the first ablated layer."""
        heads_at, mlps = ablation_plan(nodes)
        start = min(n.layer for n in nodes)
        base = rows or slice(0, self.clean_ids.shape[0])
        out = []
        for sl in self._pieces(base):
            rel = slice(sl.start - base.start, sl.stop - base.start)
            z_rel = rows_of(rows_of(z_new, rows), rel)
            mlp_rel = rows_of(rows_of(mlp_new, rows), rel)
            h = self._run(start, self.clean.resid_pre[start][sl], _Plan(heads_at, mlps, z_rel, mlp_rel))
            out.append(readout_at(h, positions[rel]))
        return out[0] if len(out) == 1 else torch.cat(out)

    # --- path patching (edges) -----------------------------------------------------------
    def _heads_delta(self, layer: int, heads: list[int], z_new: torch.Tensor, state: RunState) -> torch.Tensor:
        w_o = self.layers[layer].self_attn.o_proj.weight  # [d, n_heads·head_dim]
        delta = 0
        for h in heads:
            cols = self.head_slice(h)
            delta = delta + (z_new[..., cols] - state.z[layer][..., cols]) @ w_o[:, cols].T
        return delta

    def sender_delta(self, node: Node, z_new, mlp_new, state: RunState | None = None) -> torch.Tensor:
        state = state or self.clean
        if node.is_head:
            return self._heads_delta(node.layer, [node.head], z_new(node.layer), state)
        return mlp_new(node.layer) - state.mlp_out[node.layer]

    def receivers(self, circuit: set[Node]) -> list[Receiver]:
        """q of each circuit head; k and v of each KV group holding a circuit head (of each
        head without GQA); each circuit MLP's input; the final residual."""
        heads = sorted(n for n in circuit if n.is_head)
        gqa = self.per_group > 1
        out = []
        for layer in sorted({n.layer for n in heads}):
            here = [n.head for n in heads if n.layer == layer]
            out += [Receiver(layer, "q", h) for h in here]
            kv = sorted({h // self.per_group for h in here}) if gqa else here
            out += [Receiver(layer, port, i, group=gqa) for i in kv for port in ("k", "v")]
        out += [Receiver(n.layer, "mlp") for n in sorted(circuit) if not n.is_head]
        return out + [Receiver.final()]

    @torch.no_grad()
    def patched_path_resid(self, delta: torch.Tensor, receiver: Receiver, positions,
                           state: RunState | None = None) -> torch.Tensor:
        state = state or self.clean
        if receiver.port == "resid":
            return readout_at(state.resid_final + delta, positions)
        l, layer = receiver.layer, self.layers[receiver.layer]
        plan = _Plan(state.heads_at, state.mlps, state.z_new, state.mlp_new)
        if receiver.port == "mlp":
            plan.mlp_input = (l, layer.post_attention_layernorm(state.resid_mid[l] + delta))
        else:
            x = layer.input_layernorm(state.resid_pre[l] + delta)
            # q: the query head's columns; k/v: the KV group's (the head's own without GQA)
            cols = self.head_slice(receiver.index) if receiver.port == "q" else self.group_slice(receiver.index)
            plan.projection = (l, receiver.port, cols, getattr(layer.self_attn, f"{receiver.port}_proj")(x))
        return readout_at(self._run(l, state.resid_pre[l], plan), positions)

    # --- weights the residual probes read (contract.ResidualRunner) ----------------------
    def head_write(self, layer: int, head: int, z: torch.Tensor) -> torch.Tensor:
        cols = self.head_slice(head)
        return z[..., cols] @ self.layers[layer].self_attn.o_proj.weight[:, cols].T

    def ov(self, layer: int, head: int, x: torch.Tensor) -> torch.Tensor:
        """Through the input RMSNorm, the value projection of the head's KV group (no bias) and
        the head's columns of o_proj."""
        block = self.layers[layer]
        w_v = block.self_attn.v_proj.weight[self.group_slice(head // self.per_group)]  # [head_dim, d]
        cols = self.head_slice(head)
        return (block.input_layernorm(x) @ w_v.T) @ block.self_attn.o_proj.weight[:, cols].T

    def attn_out_bias(self, layer: int) -> torch.Tensor | None:
        return self.layers[layer].self_attn.o_proj.bias

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.model.norm(x)

    def frozen_final_norm(self, final_at: torch.Tensor):
        """RMSNorm linearised at `final_at`: (x ↦ x / rms(final_at), its weight); no centring."""
        norm = self.model.model.norm
        scale = torch.rsqrt(final_at.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return (lambda x: (x.float() * scale).to(x.dtype)), norm.weight

    def final_norm_bias(self) -> torch.Tensor | None:
        return None

    def embed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens.weight[tokens]

    def unembed_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head.weight[tokens]

    def metric(self, resid_at: torch.Tensor, prompts, rows: slice | None = None) -> torch.Tensor:
        """The task metric per prompt from final residuals at the positions: a logit
        difference reads two rows of the unembedding, other metrics the full logits."""
        x = self.model.model.norm(resid_at)
        if prompts.metric == "logit_diff":
            answers = prompts.answers if rows is None else prompts.answers[rows]
            wrongs = prompts.wrong_answers if rows is None else prompts.wrong_answers[rows]
            w = self.model.lm_head.weight
            # read out in float32 from a bf16 model (docs/method.md §3.2); no-ops in float32
            return (x.float() * (w[answers].float() - w[wrongs].float())).sum(-1)
        return task_metric(self.model.lm_head(x), prompts, rows=rows)
