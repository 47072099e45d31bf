"""BERT students from a BERT teacher (docs/method.md §11.2), with the same CapacitySpec and provenance as
GPT-2 students: evenly spaced (every_k), first_k, random or the most important (importance)
layers; narrower students take the first (importance: the most important) heads and
dimensions of each kept head, of d_model and of d_mlp."""

from __future__ import annotations

import copy

import torch
from transformers import BertForMaskedLM

from kdmech.models.capacity import (CapacitySpec, InitStrategy, check_init, copy_from_teacher, head_columns,
                                    heads_kept, layer_map, provenance, ranked_columns)


def bert_dims(config) -> dict[str, int]:
    """A BERT config's shape, in the keys of `CapacitySpec.shape`."""
    return {"n_layer": config.num_hidden_layers, "d_model": config.hidden_size, "d_mlp": config.intermediate_size,
            "n_head": config.num_attention_heads}


def bert_shape(config, capacity: CapacitySpec) -> dict[str, int]:
    return capacity.shape(**bert_dims(config))


def bert_config(tc, shape: dict):
    """The student's config: the teacher's with the student's shape."""
    sc = copy.deepcopy(tc)
    sc.num_hidden_layers, sc.hidden_size = shape["n_layer"], shape["d_model"]
    sc.num_attention_heads, sc.intermediate_size = shape["n_head"], shape["d_mlp"]
    return sc


def build_bert_student(teacher: BertForMaskedLM, capacity: CapacitySpec,
                       init: InitStrategy = "every_k", seed: int = 0, importance=None, shape: dict | None = None):
    """(student BertForMaskedLM, provenance dict); `importance` for init importance; `shape`
    instead of the capacity's."""
    check_init(init)
    tc = teacher.config
    shape = shape or bert_shape(tc, capacity)
    sc = bert_config(tc, shape)
    torch.manual_seed(seed)
    student = BertForMaskedLM(sc).eval()
    layers = layer_map(tc.num_hidden_layers, sc.num_hidden_layers, init, importance)
    prov = provenance(tc, capacity, init, seed, shape, layers)
    if init == "random":
        prov["tensors"] = {n: "random" for n, _ in student.named_parameters()}
        return student, prov
    n_t, n_s = tc.num_attention_heads, sc.num_attention_heads
    prov["heads_kept"] = heads_kept(layers, n_t, n_s, tc.hidden_size // n_t, sc.hidden_size // n_s,
                                    importance if init == "importance" else None)
    if init == "importance":
        prov["importance"] = importance.to_json()
        copy_from_teacher(student, teacher, ".encoder.layer.", layers, _ranked_index(importance, tc, sc, layers), prov)
        if tc.tie_word_embeddings:
            student.tie_weights()
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


def _ranked_index(imp, tc, sc, layers: list[int]):
    """index_for of a BERT student keeping the most important channels, heads and neurons."""
    ch = torch.tensor(imp.kept_channels(sc.hidden_size))
    n_t, n_s = tc.num_attention_heads, sc.num_attention_heads
    cols = [ranked_columns(imp, t, n_t, tc.hidden_size // n_t, n_s, sc.hidden_size // n_s) for t in layers]
    neurons = [torch.tensor(imp.kept_neurons(t, sc.intermediate_size)) for t in layers]

    def index_for(name: str, ndim: int):
        # nn.Linear weights are [out, in].
        if ".encoder.layer." in name:
            i = int(name.split(".encoder.layer.")[1].split(".")[0])
            for keys, idx in ((("self.query", "self.key", "self.value"), [cols[i], ch]),
                              (("attention.output.dense",), [ch, cols[i]]),
                              (("intermediate.dense",), [neurons[i], ch]), (("output.dense",), [ch, neurons[i]])):
                if any(k in name for k in keys):
                    return idx if ndim == 2 else idx[:1]
        if name.endswith("embeddings.weight") or "predictions.decoder" in name:
            return [slice(0, None), ch]
        if "predictions.transform.dense" in name:
            return [ch, ch] if ndim == 2 else [ch]
        if name.endswith("predictions.bias"):
            return [slice(0, None)]
        return [ch]

    return index_for
