"""Student capacity and construction from a teacher (docs/method.md §11.2).

`CapacitySpec` scales depth, width (d_model and d_mlp together) and the number of heads.
`build_student` makes the student config from the teacher's and initialises it:

- ``every_k``: student layer i copies teacher layer ``round(i·(L−1)/(L_s−1))`` — for 12 → 6
  layers this is DistilGPT2's [0, 2, 4, 7, 9, 11];
- ``first_k``: student layer i copies teacher layer i;
- ``random``: fresh initialisation, nothing copied;
- ``importance``: the most important teacher blocks, in order, and in each the most important
  heads (their most important dims), neurons and hidden channels (`models/importance.py`,
  Minitron); the ranking and its scores go to the provenance.

When the student is narrower or has fewer heads, weights are copied by slicing (the first
heads, and the first dimensions of each kept head, of d_model and of d_mlp); a tensor that
cannot be sliced from the teacher (a head grown wider than the teacher's) stays random. Every
student tensor's origin is written to `provenance` — teacher tensor and slice, or "random" —
with the teacher heads each student layer kept (`heads_kept`).

A builder takes the student's `shape` (layers, d_model, d_mlp, heads) from the capacity, or
given outright (`shape=`): the rounds of iterative pruning (`models/rounds.py`) and a capacity
in parameters (`models/param_budget.py`) pick shapes themselves.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from kdmech.errors import KdmechError

InitStrategy = Literal["every_k", "first_k", "random", "importance"]
INITS = ("every_k", "first_k", "random", "importance")


@dataclass(frozen=True)
class CapacitySpec:
    """How big a student is relative to its teacher; every ratio lies in (0, 1]."""

    depth: float = 0.5
    """Fraction of the teacher's layers (rounded, at least one)."""
    width: float = 1.0
    """Fraction of d_model and d_mlp."""
    heads: float = 1.0
    """Fraction of attention heads per layer."""
    params: float | None = None
    """Fraction of the teacher's parameters (all of them, embeddings counted, as provenance.json's
    `parameters`); depth, width and heads are then picked by models/param_budget.py's rule
    (heads kept, width first down to half, then depth) and the shape chosen is printed."""
    rounds: int = 1
    """Prune and distil in this many rounds to the target shape, each round a student with its
    checkpoints and analyses (Minitron's iterative pruning; past ~50% prune in rounds)."""

    def __post_init__(self):
        for name in ("depth", "width", "heads"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise KdmechError(f"capacity {name} ratio {value!r} is outside (0, 1]; "
                                  f"a student cannot be larger than its teacher")
        if self.params is not None and (not isinstance(self.params, (int, float)) or not 0.0 < self.params <= 1.0):
            raise KdmechError(f"capacity params {self.params!r} is outside (0, 1]: it is a fraction of the "
                              f"teacher's parameters")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise KdmechError(f"capacity rounds {self.rounds!r} must be a whole number ≥ 1")

    @property
    def name(self) -> str:
        """d<depth>-w<width>-h<heads>, or p<params> for a capacity in parameters."""
        if self.params is not None:
            return f"p{self.params:g}"
        return f"d{self.depth:g}-w{self.width:g}-h{self.heads:g}"

    def shape(self, n_layer: int, d_model: int, d_mlp: int, n_head: int) -> dict[str, int]:
        layers = max(1, round(self.depth * n_layer))
        heads = max(1, round(self.heads * n_head))
        width = max(heads, round(self.width * d_model))
        if width % heads:
            raise KdmechError(f"capacity {self.name}: student width {width} is not divisible by "
                              f"its {heads} heads; choose width/heads ratios that divide")
        return {"n_layer": layers, "d_model": width, "d_mlp": max(1, round(self.width * d_mlp)),
                "n_head": heads}


def provenance(tc, capacity: CapacitySpec, init: str, seed: int, shape: dict, layers: list[int]) -> dict:
    """A student's provenance before its tensors are copied (the same keys in every family)."""
    return {"teacher": getattr(tc, "_name_or_path", ""), "capacity": asdict(capacity), "init": init, "seed": seed,
            "shape": shape, "layer_map": {str(i): t for i, t in enumerate(layers)}, "heads_kept": {}, "tensors": {}}


def heads_kept(layers: list[int], n_head_t: int, n_head_s: int, d_head_t: int, d_head_s: int,
               importance=None) -> dict[str, list[int]]:
    """Student layer → the teacher heads it copies: the most important (importance; whole KV
    groups under GQA) or the first ones; none where a head cannot be sliced (wider than the
    teacher's)."""
    if d_head_s > d_head_t:
        return {}
    return {str(i): (importance.kept_heads(t, n_head_s) if importance is not None else list(range(n_head_s)))
            for i, t in enumerate(layers)}


def gpt2_dims(config) -> dict[str, int]:
    """A GPT-2 config's shape, in the keys of `CapacitySpec.shape`."""
    return {"n_layer": config.n_layer, "d_model": config.n_embd, "d_mlp": config.n_inner or 4 * config.n_embd,
            "n_head": config.n_head}


def gpt2_shape(config, capacity: CapacitySpec) -> dict[str, int]:
    return capacity.shape(**gpt2_dims(config))


def gpt2_config(tc, shape: dict):
    """The student's config: the teacher's with the student's shape."""
    sc = copy.deepcopy(tc)
    sc.n_layer, sc.n_embd, sc.n_head, sc.n_inner = shape["n_layer"], shape["d_model"], shape["n_head"], shape["d_mlp"]
    return sc


def layer_map(n_teacher: int, n_student: int, init: InitStrategy, importance=None) -> list[int]:
    """Teacher layer each student layer is copied from and distilled against (importance: the
    most important blocks, in order)."""
    if init == "importance":
        if importance is None:
            raise KdmechError("init importance needs the teacher's importance scores (calibration data)")
        return importance.layers(n_student)
    if init == "first_k":
        return list(range(n_student))
    if n_student == 1:
        return [0]
    return [int(x) for x in np.round(np.linspace(0, n_teacher - 1, n_student))]


def _slice_copy(dst: torch.Tensor, src: torch.Tensor, index: list) -> list:
    """dst ← src[index] when shapes allow; returns the slice recorded in the provenance."""
    part = src
    for d, i in enumerate(index):  # one dimension at a time: several index tensors do not pair up
        part = part.index_select(d, i) if isinstance(i, torch.Tensor) else part[(slice(None),) * d + (i,)]
    if part.shape != dst.shape:
        raise ValueError(f"slice {part.shape} ≠ {dst.shape}")
    dst.copy_(part)
    return [_ranges(i) if isinstance(i, torch.Tensor) else [[i.start or 0, i.stop or src.shape[d]]]
            for d, i in enumerate(index)]


def _ranges(idx: torch.Tensor) -> list[list[int]]:
    """Sorted indices as half-open [start, stop) runs, e.g. [0,1,2,8,9] → [[0,3],[8,10]]."""
    runs, values = [], idx.tolist()
    for v in values:
        if runs and runs[-1][1] == v:
            runs[-1][1] = v + 1
        else:
            runs.append([v, v + 1])
    return runs


def head_columns(n_head_t: int, d_head_t: int, n_head_s: int, d_head_s: int) -> torch.Tensor:
    """Teacher columns kept for the student's heads: head h keeps its first d_head_s dims."""
    return torch.cat([torch.arange(h * d_head_t, h * d_head_t + d_head_s) for h in range(n_head_s)])


def copy_from_teacher(student, teacher, layer_prefix: str, layers: list[int], index_for,
                      prov: dict) -> None:
    """Copy (or slice) every student tensor from its teacher tensor: block i of the student
    (named `<layer_prefix>i.`) reads teacher block layers[i]; `index_for(name, ndim)` gives the
    slice, None where it cannot be sliced (left random). Records each origin in `prov`."""
    teacher_params = dict(teacher.named_parameters())
    with torch.no_grad():
        for name, param in student.named_parameters():
            src_name = name
            if layer_prefix in name:
                i = int(name.split(layer_prefix)[1].split(".")[0])
                src_name = name.replace(f"{layer_prefix}{i}.", f"{layer_prefix}{layers[i]}.", 1)
            src = teacher_params.get(src_name)
            index = index_for(name, param.ndim)
            if src is None or any(ix is None for ix in index):
                prov["tensors"][name] = "random"
                continue
            sl = _slice_copy(param, src, index)
            whole = list(param.shape) == list(src.shape)
            prov["tensors"][name] = {"from": src_name, **({} if whole else {"slice": sl})}


def check_init(init: str) -> None:
    if init not in INITS:
        raise KdmechError(f"init {init!r} is unknown; accepted: {', '.join(INITS)}")


def ranked_columns(imp, layer: int, n_head_t: int, d_head_t: int, n_head_s: int, d_head_s: int):
    """Teacher columns of the most important heads of `layer`, each its most important dims."""
    if d_head_s > d_head_t:
        return None
    return torch.cat([torch.tensor(imp.kept_head_dims(layer, h, d_head_s)) + h * d_head_t
                      for h in imp.kept_heads(layer, n_head_s)])


def _gpt2_ranked_index(imp, tc, sc, layers: list[int]):
    """index_for of a GPT-2 student keeping the most important channels, heads and neurons."""
    d_t = tc.n_embd
    channels = torch.tensor(imp.kept_channels(sc.n_embd))
    cols = [ranked_columns(imp, t, tc.n_head, d_t // tc.n_head, sc.n_head, sc.n_embd // sc.n_head) for t in layers]
    neurons = [torch.tensor(imp.kept_neurons(t, sc.n_inner)) for t in layers]

    def index_for(name: str, ndim: int):
        if name.startswith("transformer.h."):
            i = int(name.split(".")[2])
            c = cols[i]
            qkv = None if c is None else torch.cat([c + k * d_t for k in range(3)])
            for key, idx in (("attn.c_attn", [channels, qkv]), ("attn.c_proj", [c, channels]),
                             ("mlp.c_fc", [channels, neurons[i]]), ("mlp.c_proj", [neurons[i], channels])):
                if key in name:
                    return idx if ndim == 2 else idx[1:]
        if name.endswith(("wte.weight", "wpe.weight")):
            return [slice(0, None), channels]
        return [channels]

    return index_for


def build_gpt2_student(teacher: GPT2LMHeadModel, capacity: CapacitySpec,
                       init: InitStrategy = "every_k", seed: int = 0, importance=None, shape: dict | None = None):
    """(student, provenance dict) — see module docstring; `importance` (models.importance) for
    init importance; `shape` instead of the capacity's."""
    check_init(init)
    tc: GPT2Config = teacher.config
    shape = shape or gpt2_shape(tc, capacity)
    sc = gpt2_config(tc, shape)
    torch.manual_seed(seed)
    student = GPT2LMHeadModel(sc).eval()
    layers = layer_map(tc.n_layer, sc.n_layer, init, importance)
    prov = provenance(tc, capacity, init, seed, shape, layers)
    if init == "random":
        prov["tensors"] = {n: "random" for n, _ in student.named_parameters()}
        return student, prov
    prov["heads_kept"] = heads_kept(layers, tc.n_head, sc.n_head, tc.n_embd // tc.n_head, sc.n_embd // sc.n_head,
                                    importance if init == "importance" else None)
    if init == "importance":
        prov["importance"] = importance.to_json()
        copy_from_teacher(student, teacher, "transformer.h.", layers, _gpt2_ranked_index(importance, tc, sc, layers),
                          prov)
        if tc.tie_word_embeddings:
            student.tie_weights()
        return student, prov

    d_t, d_s = tc.n_embd, sc.n_embd
    dh_t, dh_s = d_t // tc.n_head, d_s // sc.n_head
    heads = head_columns(tc.n_head, dh_t, sc.n_head, dh_s) if dh_s <= dh_t else None
    model_dim, mlp_dim = slice(0, d_s), slice(0, sc.n_inner)
    qkv = (torch.cat([heads + k * d_t for k in range(3)]) if heads is not None else None)

    def index_for(name: str, ndim: int):
        # GPT-2 uses Conv1D: weights are [in, out].
        if "attn.c_attn" in name:
            return [model_dim, qkv] if ndim == 2 else [qkv]
        if "attn.c_proj" in name:
            return [heads, model_dim] if ndim == 2 else [model_dim]
        if "mlp.c_fc" in name:
            return [model_dim, mlp_dim] if ndim == 2 else [mlp_dim]
        if "mlp.c_proj" in name:
            return [mlp_dim, model_dim] if ndim == 2 else [model_dim]
        if name.endswith(("wte.weight", "wpe.weight")):
            return [slice(0, None), model_dim]
        return [model_dim]  # LayerNorm weights and biases

    copy_from_teacher(student, teacher, "transformer.h.", layers, index_for, prov)
    if tc.tie_word_embeddings:
        student.tie_weights()
    return student, prov
