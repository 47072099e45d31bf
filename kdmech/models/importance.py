"""Importance of a teacher's blocks and width components on calibration data (Minitron).

Depth: each block in turn is replaced by the identity (its output := its input) and the final
hidden states of the bypassed model (the base model's last hidden state: after the final norm,
BERT's last encoder output) are compared with the intact model's over the real
(attention-mask) tokens: normalised MSE, Σ‖h' − h‖² / Σ‖h‖², or the cosine variant,
mean(1 − cos(h', h)). A block whose removal moves the output most is the most important.
Every score is accumulated over batches of calibration sequences, so it does not depend on the
batch size.

Width: mean absolute activation over the real tokens of
- each attention head (and each dimension of a head): the input of the attention output
  projection, split into heads; under grouped-query attention whole KV groups are ranked by
  the sum of their query heads' scores;
- each MLP neuron: the input of the MLP's down projection;
- each hidden channel: the outputs of the residual stream's LayerNorms (RMSNorms), summed.

Where a family's activations are read is its `WidthTable`, registered in `TABLES` by
`config.model_type`; a new family adds its own table. Plain torch forwards and hooks only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

import torch

from kdmech.errors import KdmechError
from kdmech.models.tiny_llama import LLAMA_TYPES

DepthMetric = Literal["mse", "cosine"]


@dataclass(frozen=True)
class WidthTable:
    """Where one family's blocks and activations live."""

    blocks: Callable
    """model → its list of transformer blocks."""
    head_input: Callable
    """block → the module whose input is the concatenated head outputs."""
    neuron_input: Callable
    """block → the module whose input is the MLP's neuron activations."""
    channel_norms: Callable
    """model → the LayerNorms whose outputs are the residual stream's channels."""
    n_head: Callable
    group_size: Callable = lambda config: 1
    """config → query heads per KV group (1 without GQA)."""


def _gpt2_norms(m):
    return [n for b in m.transformer.h for n in (b.ln_1, b.ln_2)] + [m.transformer.ln_f]


def _bert_norms(m):
    enc = m.bert.encoder.layer
    return [m.bert.embeddings.LayerNorm] + [n for b in enc for n in (b.attention.output.LayerNorm, b.output.LayerNorm)]


def _llama_norms(m):
    layers = m.model.layers
    return [n for b in layers for n in (b.input_layernorm, b.post_attention_layernorm)] + [m.model.norm]


def _kv_group_size(config) -> int:
    return config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


TABLES: dict[str, WidthTable] = {
    "gpt2": WidthTable(lambda m: list(m.transformer.h), lambda b: b.attn.c_proj, lambda b: b.mlp.c_proj,
                       _gpt2_norms, lambda c: c.n_head),
    "bert": WidthTable(lambda m: list(m.bert.encoder.layer), lambda b: b.attention.output.dense,
                       lambda b: b.output.dense, _bert_norms, lambda c: c.num_attention_heads),
}
_LLAMA = WidthTable(lambda m: list(m.model.layers), lambda b: b.self_attn.o_proj, lambda b: b.mlp.down_proj,
                    _llama_norms, lambda c: c.num_attention_heads, _kv_group_size)
TABLES |= {t: _LLAMA for t in LLAMA_TYPES}


def table_of(model) -> WidthTable:
    t = model.config.model_type
    if t not in TABLES:
        raise KdmechError(f"importance ranking has no module table for model type {t!r}; accepted: {sorted(TABLES)}")
    return TABLES[t]


@dataclass(frozen=True)
class Importance:
    """Scores of a teacher's components; higher = more important."""

    metric: str
    data: str
    """Where the calibration tokens came from."""
    tokens: int
    """Real (attention-mask) tokens the scores are averaged over."""
    blocks: list[float]
    heads: list[list[float]]
    head_dims: list[list[list[float]]]
    neurons: list[list[float]]
    channels: list[float]
    group_size: int = 1
    """Query heads per KV group (heads are kept in whole groups of this size)."""
    sequences: int = 0
    """Calibration sequences."""

    def to_json(self) -> dict:
        return asdict(self) | {"layer_ranking": self.layer_ranking()}

    @classmethod
    def from_json(cls, d: dict) -> "Importance":
        return cls(**{k: v for k, v in d.items() if k != "layer_ranking"})

    def layer_ranking(self) -> list[int]:
        return _top(self.blocks, len(self.blocks), ordered=False)

    def layers(self, n: int) -> list[int]:
        """The n most important blocks, in their order."""
        return _top(self.blocks, n)

    def kept_heads(self, layer: int, n: int) -> list[int]:
        """The n most important heads of `layer` (whole KV groups under GQA), in order."""
        g = self.group_size
        if n % g:
            raise KdmechError(f"{n} heads cannot keep whole KV groups of {g}")
        s = self.heads[layer]
        groups = _top([sum(s[i * g:(i + 1) * g]) for i in range(len(s) // g)], n // g)
        return [i * g + j for i in groups for j in range(g)]

    def kept_head_dims(self, layer: int, head: int, n: int) -> list[int]:
        return _top(self.head_dims[layer][head], n)

    def kept_neurons(self, layer: int, n: int) -> list[int]:
        return _top(self.neurons[layer], n)

    def kept_channels(self, n: int) -> list[int]:
        return _top(self.channels, n)


def _top(scores: list[float], n: int, ordered: bool = True) -> list[int]:
    """Indices of the n largest scores (ties: the lower index), sorted by index when ordered."""
    rank = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n]
    return sorted(rank) if ordered else rank


def _final_hidden(model, ids, mask) -> torch.Tensor:
    """The base model's last hidden state: after the final norm (GPT-2's ln_f, Llama's norm),
    the last encoder layer's output for BERT; the LM head is not run."""
    return model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state


def _batches(ids, mask, batch_size: int | None):
    n = ids.shape[0]
    step = batch_size or n
    return [(ids[i:i + step], mask[i:i + step]) for i in range(0, n, step)]


def _change(h: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, metric: DepthMetric) -> tuple[float, float]:
    """(numerator, denominator) of the change over the real tokens of one batch: Σ‖h − ref‖² and
    Σ‖ref‖² (mse), Σ(1 − cos) and the token count (cosine); their ratios summed over batches."""
    keep = mask.bool()
    h, ref = h[keep], ref[keep]
    if metric == "cosine":
        return float((1 - torch.nn.functional.cosine_similarity(h, ref, dim=-1)).sum()), float(keep.sum())
    return float(((h - ref) ** 2).sum()), float((ref ** 2).sum())


def block_importance(model, ids, mask, metric: DepthMetric = "mse", batch_size: int | None = None) -> list[float]:
    """Change of the final hidden states when each block in turn is the identity, over every
    real token of the calibration ids (in batches of `batch_size` sequences)."""
    if metric not in ("mse", "cosine"):
        raise KdmechError(f"depth importance metric {metric!r} is unknown; accepted: mse, cosine")

    def identity(module, args, out):
        return (args[0], *out[1:]) if isinstance(out, tuple) else args[0]

    blocks = table_of(model).blocks(model)
    num, den = [0.0] * len(blocks), [0.0] * len(blocks)
    with torch.no_grad():
        for b_ids, b_mask in _batches(ids, mask, batch_size):
            ref = _final_hidden(model, b_ids, b_mask)
            for i, block in enumerate(blocks):
                handle = block.register_forward_hook(identity)
                try:
                    n, d = _change(_final_hidden(model, b_ids, b_mask), ref, b_mask, metric)
                finally:
                    handle.remove()
                num[i], den[i] = num[i] + n, den[i] + d
    return [n / d for n, d in zip(num, den)]


def _abs_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ |x| over the real tokens, per last-dimension index."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x.abs() * w).sum(dim=tuple(range(x.ndim - 1)))


def width_activations(model, ids, mask, batch_size: int | None = None) -> dict[str, list[torch.Tensor]]:
    """Mean |activation| per feature over the real tokens: head inputs, neuron inputs (per
    block), channel norms (per norm, in the table's order)."""
    table = table_of(model)
    sites = {"heads": [table.head_input(b) for b in table.blocks(model)],
             "neurons": [table.neuron_input(b) for b in table.blocks(model)],
             "channels": table.channel_norms(model)}
    sums: dict[str, list] = {k: [0.0] * len(v) for k, v in sites.items()}
    current = {}

    def add(kind, i, x):
        sums[kind][i] = sums[kind][i] + _abs_sum(x, current["mask"])

    hooks = [m.register_forward_pre_hook(lambda mod, a, k=k, i=i: add(k, i, a[0]))
             for k in ("heads", "neurons") for i, m in enumerate(sites[k])]
    hooks += [m.register_forward_hook(lambda mod, a, out, i=i: add("channels", i, out))
              for i, m in enumerate(sites["channels"])]
    try:
        with torch.no_grad():
            for b_ids, b_mask in _batches(ids, mask, batch_size):
                current["mask"] = b_mask
                model(input_ids=b_ids, attention_mask=b_mask)
    finally:
        for h in hooks:
            h.remove()
    tokens = float(mask.sum())
    return {k: [v / tokens for v in vs] for k, vs in sums.items()}


def importance(model, ids, mask=None, metric: DepthMetric = "mse", data: str = "",
               batch_size: int | None = None) -> Importance:
    """Every score of `model` on the calibration ids (see the module docstring), in batches of
    `batch_size` sequences (default: all at once)."""
    mask = torch.ones_like(ids) if mask is None else mask
    model = model.eval()
    table = table_of(model)
    n_head = table.n_head(model.config)
    acts = width_activations(model, ids, mask, batch_size)
    head_dims = [a.reshape(n_head, -1) for a in acts["heads"]]
    return Importance(
        metric=metric, data=data, tokens=int(mask.sum()), sequences=int(ids.shape[0]),
        blocks=block_importance(model, ids, mask, metric, batch_size),
        heads=[d.mean(-1).tolist() for d in head_dims], head_dims=[d.tolist() for d in head_dims],
        neurons=[a.tolist() for a in acts["neurons"]], channels=torch.stack(acts["channels"]).sum(0).tolist(),
        group_size=table.group_size(model.config))
