"""Iterative pruning (`--capacity.rounds N`): the shapes of N rounds from the teacher's to the
target's, and a round's provenance in the teacher's own indices (docs/method.md §11.2).

Minitron prunes past ~50% in rounds with distillation between them. Each round here shrinks
every dimension by the same factor: round k of N has round(n_T·(n_S/n_T)^(k/N)) layers, MLP
units and heads (KV groups under GQA, each with its query heads), kept between the previous
round's and the target's. d_model likewise for Llama-layout models (head_dim is kept); for
GPT-2 and BERT, where d_model = heads × head dim, the head dim is interpolated the same way and
d_model is their product — so no round's heads are wider than its parent's, and every round's
width divides into its heads. The last round is the target exactly. Round k's student is
pruned from round k−1's (its init applied to that model: importance scored on it) and distilled
against the original teacher.
"""

from __future__ import annotations

def _between(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _geometric(start: int, end: int, k: int, n: int) -> int:
    return round(start * (end / start) ** (k / n))


def round_shapes(teacher: dict, target: dict, rounds: int) -> list[dict]:
    """The shape of each round (the last one `target`); `teacher` and `target` have the keys of a
    family's shape (`n_kv_head` present for grouped-query families)."""
    shapes, previous = [], dict(teacher)
    for k in range(1, rounds):
        shape = {key: _between(_geometric(teacher[key], target[key], k, rounds), target[key], previous[key])
                 for key in ("n_layer", "d_mlp")}
        if "n_kv_head" in teacher:
            per_group = teacher["n_head"] // teacher["n_kv_head"]
            kv = _between(_geometric(teacher["n_kv_head"], target["n_kv_head"], k, rounds), target["n_kv_head"],
                          previous["n_kv_head"])
            shape |= {"n_head": kv * per_group, "n_kv_head": kv,
                      "d_model": _between(_geometric(teacher["d_model"], target["d_model"], k, rounds),
                                          target["d_model"], previous["d_model"])}
        else:
            heads = _between(_geometric(teacher["n_head"], target["n_head"], k, rounds), target["n_head"],
                             previous["n_head"])
            dh = [d["d_model"] // d["n_head"] for d in (teacher, target, previous)]
            shape |= {"n_head": heads, "d_model": heads * _between(_geometric(dh[0], dh[1], k, rounds), dh[1], dh[2])}
        shapes.append(shape)
        previous = shape
    return shapes + [dict(target)]


def compose(parent: dict, child: dict) -> dict:
    """A round's provenance with `layer_map` and `heads_kept` in the original teacher's indices
    (through the parent's own), the parent's indices kept under `parent_layer_map` and
    `parent_heads_kept`."""
    layers = {i: parent["layer_map"][str(t)] for i, t in child["layer_map"].items()}
    heads = {i: [parent["heads_kept"][str(child["layer_map"][i])][h] for h in hs]
             for i, hs in child["heads_kept"].items() if str(child["layer_map"][i]) in parent["heads_kept"]}
    return {**child, "layer_map": layers, "heads_kept": heads, "parent_layer_map": child["layer_map"],
            "parent_heads_kept": child["heads_kept"]}
