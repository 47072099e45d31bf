"""Students from a Llama-layout teacher (Llama, Mistral, Qwen2, Qwen3; docs/method.md §11.2),
with the CapacitySpec, layer maps and provenance of GPT-2 students.

- depth: every_k, first_k or random layers (`capacity.layer_map`);
- width: d_model (hidden size, with every RMSNorm weight, the embeddings and the unembedding)
  and the gated MLP's width (gate, up and down projections) scaled by `width`;
- heads in whole KV groups: a student keeps the first `heads`·n_kv KV groups, each with all of
  its query heads (query head h reads KV group h // (n_heads / n_kv), as in transformers'
  `repeat_kv`), so GQA's grouping is kept; a ratio that would split a group is refused.
  head_dim stays the teacher's (as in Minitron's width pruning).

Every kept index set is a prefix, so each student tensor is the teacher tensor's leading
block; its origin is written to the provenance, "random" for a random init.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from kdmech.errors import KdmechError
from kdmech.models.capacity import CapacitySpec, InitStrategy, copy_from_teacher, layer_map


def kv_groups(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


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


def build_llama_student(teacher, capacity: CapacitySpec, init: InitStrategy = "every_k", seed: int = 0):
    """(student of the teacher's own class, provenance dict) — see module docstring."""
    if init not in ("every_k", "first_k", "random"):
        raise KdmechError(f"init {init!r} is unknown; accepted: every_k, first_k, random")
    tc = teacher.config
    shape = llama_shape(tc, capacity)
    sc = copy.deepcopy(tc)
    sc.num_hidden_layers, sc.hidden_size = shape["n_layer"], shape["d_model"]
    sc.intermediate_size = shape["d_mlp"]
    sc.num_attention_heads, sc.num_key_value_heads = shape["n_head"], shape["n_kv_head"]
    sc.head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    if getattr(sc, "layer_types", None) is not None:
        sc.layer_types = [tc.layer_types[i] for i in layer_map(tc.num_hidden_layers, sc.num_hidden_layers, init)]
    torch.manual_seed(seed)
    student = type(teacher)(sc).eval()
    layers = layer_map(tc.num_hidden_layers, sc.num_hidden_layers, init)
    prov = {"teacher": getattr(tc, "_name_or_path", ""), "capacity": asdict(capacity),
            "init": init, "seed": seed, "shape": shape,
            "layer_map": {str(i): t for i, t in enumerate(layers)}, "tensors": {}}
    if init == "random":
        prov["tensors"] = {n: "random" for n, _ in student.named_parameters()}
        return student, prov
    student_shapes = {n: p.shape for n, p in student.named_parameters()}

    def index_for(name: str, ndim: int):
        """The leading block of every dimension: the kept dims, MLP units, heads and groups."""
        return [slice(0, n) for n in student_shapes[name]]

    copy_from_teacher(student, teacher, "model.layers.", layers, index_for, prov)
    if tc.tie_word_embeddings:
        student.tie_weights()
    return student, prov
