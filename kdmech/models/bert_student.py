"""BERT students from a BERT teacher (docs/method.md §11.2), with the same CapacitySpec and provenance as
GPT-2 students: evenly spaced (every_k), first_k or random layers; narrower students take the
first heads and dimensions of each kept head, of d_model and of d_mlp."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from transformers import BertForMaskedLM

from kdmech.errors import KdmechError
from kdmech.models.capacity import (CapacitySpec, InitStrategy, head_columns, copy_from_teacher,
                                    layer_map)


def build_bert_student(teacher: BertForMaskedLM, capacity: CapacitySpec,
                       init: InitStrategy = "every_k", seed: int = 0):
    """(student BertForMaskedLM, provenance dict)."""
    if init not in ("every_k", "first_k", "random"):
        raise KdmechError(f"init {init!r} is unknown; accepted: every_k, first_k, random")
    tc = teacher.config
    shape = capacity.shape(tc.num_hidden_layers, tc.hidden_size, tc.intermediate_size,
                           tc.num_attention_heads)
    sc = copy.deepcopy(tc)
    sc.num_hidden_layers, sc.hidden_size = shape["n_layer"], shape["d_model"]
    sc.num_attention_heads, sc.intermediate_size = shape["n_head"], shape["d_mlp"]
    torch.manual_seed(seed)
    student = BertForMaskedLM(sc).eval()
    layers = layer_map(tc.num_hidden_layers, sc.num_hidden_layers, init)
    prov = {"teacher": getattr(tc, "_name_or_path", ""), "capacity": asdict(capacity), "init": init,
            "seed": seed, "shape": shape, "layer_map": {str(i): t for i, t in enumerate(layers)}, "tensors": {}}
    if init == "random":
        prov["tensors"] = {n: "random" for n, _ in student.named_parameters()}
        return student, prov
    d_s, dh_t = sc.hidden_size, tc.hidden_size // tc.num_attention_heads
    dh_s = d_s // sc.num_attention_heads
    heads = head_columns(tc.num_attention_heads, dh_t, sc.num_attention_heads, dh_s) if dh_s <= dh_t else None
    model_dim, mlp_dim = slice(0, d_s), slice(0, sc.intermediate_size)

    def index_for(name: str, ndim: int):
        # nn.Linear weights are [out, in].
        if any(k in name for k in ("self.query", "self.key", "self.value")):
            return [heads, model_dim] if ndim == 2 else [heads]
        if "attention.output.dense" in name:
            return [model_dim, heads] if ndim == 2 else [model_dim]
        if "intermediate.dense" in name:
            return [mlp_dim, model_dim] if ndim == 2 else [mlp_dim]
        if "output.dense" in name:
            return [model_dim, mlp_dim] if ndim == 2 else [model_dim]
        if name.endswith("embeddings.weight") or "predictions.decoder" in name:
            return [slice(0, None), model_dim]
        if "predictions.transform.dense" in name:
            return [model_dim, model_dim] if ndim == 2 else [model_dim]
        if name.endswith("predictions.bias"):
            return [slice(0, None)]
        return [model_dim]  # LayerNorms

    copy_from_teacher(student, teacher, ".encoder.layer.", layers, index_for, prov)
    if tc.tie_word_embeddings:
        student.tie_weights()
    return student, prov
