"""Students from a Llama-layout teacher (Llama, Mistral, Qwen2, Qwen3; docs/method.md §11.2),
with the CapacitySpec, layer maps and provenance of GPT-2 students.

- depth: every_k, first_k, random or the most important (importance) layers
  (`capacity.layer_map`);
- width: d_model (hidden size, with every RMSNorm weight, the embeddings and the unembedding)
  and the gated MLP's width (gate, up and down projections) scaled by `width`;
- heads in whole KV groups: a student keeps `heads`·n_kv KV groups, each with all of its
  query heads (query head h reads KV group h // (n_heads / n_kv), as in transformers'
  `repeat_kv`), so GQA's grouping is kept; a ratio that would split a group is refused.
  head_dim stays the teacher's (as in Minitron's width pruning).

every_k and first_k keep the first groups, channels and MLP units: each student tensor is the
teacher tensor's leading block. importance keeps the KV groups with the largest summed query-
head scores, the most important hidden channels and MLP units (`models/importance.py`). Each
tensor's origin is written to the provenance, "random" for a random init.
"""

from __future__ import annotations

import copy

import torch

from kdmech.errors import KdmechError
from kdmech.models.capacity import (CapacitySpec, InitStrategy, check_init, copy_from_teacher, heads_kept,
                                    layer_map, provenance)


def kv_groups(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def llama_dims(config) -> dict[str, int]:
    """A Llama-layout config's shape, in the keys of `llama_shape`."""
    return {"n_layer": config.num_hidden_layers, "d_model": config.hidden_size, "d_mlp": config.intermediate_size,
            "n_head": config.num_attention_heads, "n_kv_head": kv_groups(config)}


def llama_shape(config, capacity: CapacitySpec) -> dict[str, int]:
    """The student's layers, hidden size, MLP width, query heads and KV groups; a heads ratio
    that does not keep whole KV groups is refused in one line."""
    n_head, n_kv = config.num_attention_heads, kv_groups(config)
    per_group = n_head // n_kv
    heads = max(1, round(capacity.heads * n_head))
    if heads % per_group:
        raise KdmechError(f"capacity heads ratio {capacity.heads:g} keeps {heads} of {n_head} query heads, "
                          f"which splits a KV group of {per_group} query heads; accepted: ratios keeping "
                          f"whole groups, k/{n_kv} for k = 1..{n_kv}")
    return {"n_layer": max(1, round(capacity.depth * config.num_hidden_layers)),
            "d_model": max(1, round(capacity.width * config.hidden_size)),
            "d_mlp": max(1, round(capacity.width * config.intermediate_size)),
            "n_head": heads, "n_kv_head": heads // per_group}


def llama_config(tc, shape: dict, layers: list[int] | None = None):
    """The student's config: the teacher's with the student's shape, head_dim kept, and the
    layer types (sliding or full attention) of the teacher layers `layers` when it has them."""
    sc = copy.deepcopy(tc)
    sc.num_hidden_layers, sc.hidden_size = shape["n_layer"], shape["d_model"]
    sc.intermediate_size = shape["d_mlp"]
    sc.num_attention_heads, sc.num_key_value_heads = shape["n_head"], shape["n_kv_head"]
    sc.head_dim = head_dim(tc)
    if getattr(sc, "layer_types", None) is not None:
        layers = layers or layer_map(tc.num_hidden_layers, sc.num_hidden_layers, "every_k")
        sc.layer_types = [tc.layer_types[i] for i in layers]
    return sc


def build_llama_student(teacher, capacity: CapacitySpec, init: InitStrategy = "every_k", seed: int = 0,
                        importance=None, shape: dict | None = None):
    """(student of the teacher's own class, provenance dict) — see module docstring; `shape`
    instead of the capacity's."""
    check_init(init)
    tc = teacher.config
    shape = shape or llama_shape(tc, capacity)
    layers = layer_map(tc.num_hidden_layers, shape["n_layer"], init, importance)
    sc = llama_config(tc, shape, layers)
    torch.manual_seed(seed)
    student = type(teacher)(sc).eval()
    prov = provenance(tc, capacity, init, seed, shape, layers)
    if init == "random":
        prov["tensors"] = {n: "random" for n, _ in student.named_parameters()}
        return student, prov
    hd = head_dim(tc)
    prov["heads_kept"] = heads_kept(layers, tc.num_attention_heads, sc.num_attention_heads, hd, hd,
                                    importance if init == "importance" else None)
    if init == "importance":
        prov["importance"] = importance.to_json()
        index_for = _ranked_index(importance, tc, sc, layers)
    else:
        student_shapes = {n: p.shape for n, p in student.named_parameters()}

        def index_for(name: str, ndim: int):
            """The leading block of every dimension: the kept dims, MLP units, heads and groups."""
            return [slice(0, n) for n in student_shapes[name]]

    copy_from_teacher(student, teacher, "model.layers.", layers, index_for, prov)
    if tc.tie_word_embeddings:
        student.tie_weights()
    return student, prov


def _rows(units: list[int], size: int) -> torch.Tensor:
    """The rows (or columns) of units of `size` each, e.g. heads of head_dim."""
    return torch.cat([torch.arange(u * size, (u + 1) * size) for u in units])


def _ranked_index(imp, tc, sc, layers: list[int]):
    """index_for of a Llama-layout student keeping the most important KV groups (with their
    query heads), hidden channels and MLP units. nn.Linear weights are [out, in]."""
    hd, per_group = head_dim(tc), tc.num_attention_heads // kv_groups(tc)
    ch = torch.tensor(imp.kept_channels(sc.hidden_size))
    heads = [imp.kept_heads(t, sc.num_attention_heads) for t in layers]
    q = [_rows(h, hd) for h in heads]
    kv = [_rows([x // per_group for x in h[::per_group]], hd) for h in heads]
    units = [torch.tensor(imp.kept_neurons(t, sc.intermediate_size)) for t in layers]
    every = slice(None)

    def index_for(name: str, ndim: int):
        if name.startswith("model.layers."):
            i = int(name.split(".")[2])
            table = {"self_attn.q_proj": [q[i], ch], "self_attn.k_proj": [kv[i], ch], "self_attn.v_proj": [kv[i], ch],
                     "self_attn.o_proj": [ch, q[i]], "mlp.gate_proj": [units[i], ch], "mlp.up_proj": [units[i], ch],
                     "mlp.down_proj": [ch, units[i]], "input_layernorm": [ch], "post_attention_layernorm": [ch],
                     "self_attn.q_norm": [every], "self_attn.k_norm": [every]}
            module = ".".join(name.split(".")[3:-1])
            if module in table:
                return table[module] if ndim == len(table[module]) else table[module][:1]
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            return [every, ch]
        elif name == "model.norm.weight":
            return [ch]
        raise KdmechError(f"importance pruning does not know the Llama-layout tensor {name!r}; accepted: the "
                          f"llama, mistral, qwen2 and qwen3 layouts")

    return index_for
