"""A capacity in parameters (`--capacity.params p`): the student shape with at most p of the
teacher's parameters, picked by one stated rule (docs/method.md §11.2).

Counted: every parameter of the model — embeddings, position embeddings and the unembedding
included, tied weights once (`sum(p.numel() for p in model.parameters())`): the `parameters` and
`teacher_parameters` of provenance.json, whose ratio the report shows.

The rule follows Minitron's preference order (width pruning before depth; attention heads kept):
1. every head is kept (under GQA every KV group);
2. width — d_model and d_mlp together, as `CapacitySpec.width` scales them — shrinks first:
   the widest width of at least half the teacher's whose student keeps every layer and has at
   most p of the parameters;
3. when even half the width is too many parameters, depth goes too: the most layers for which
   some width of at least half fits, at the widest such width.
The widths tried are the ones a student can take: GPT-2 and BERT multiples of the head count
(d_model divisible by the heads), Llama-layout any. A fraction below the smallest student of
the rule (one layer at half width) is refused in one line naming that smallest fraction.
Counts come from instantiating configs on the meta device (no memory, no weights).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from kdmech.errors import KdmechError
from kdmech.models.capacity import CapacitySpec

MIN_WIDTH = 0.5
"""The narrowest width the rule takes before it drops layers."""


def count_parameters(model) -> int:
    """Every parameter, tied ones once."""
    return sum(p.numel() for p in model.parameters())


class _Counter:
    """Parameters of students of one teacher by (layers, d_model), from two meta instantiations
    per width: P(l) = P(1) + (l − 1)·(P(2) − P(1)), every block having the same shape."""

    def __init__(self, teacher, family):
        self.teacher, self.family, self.cache = teacher, family, {}
        self.dims = family.dims(teacher.config)

    def spec(self, layers: int, width: int) -> CapacitySpec:
        return CapacitySpec(depth=layers / self.dims["n_layer"], width=width / self.dims["d_model"], heads=1.0)

    def __call__(self, layers: int, width: int) -> int:
        if width not in self.cache:
            one, two = (self._count(self.spec(1, width), n) for n in (1, 2))
            self.cache[width] = (one, two - one)
        first, per_layer = self.cache[width]
        return first + (layers - 1) * per_layer

    def _count(self, spec: CapacitySpec, layers: int) -> int:
        shape = {**self.family.shape(self.teacher.config, spec), "n_layer": layers}
        with torch.device("meta"):
            return count_parameters(type(self.teacher)(self.family.student_config(self.teacher.config, shape)))


def widths(dims: dict) -> list[int]:
    """The d_models a student keeping every head can take, from half the teacher's up, ascending."""
    d, step = dims["d_model"], (1 if "n_kv_head" in dims else dims["n_head"])
    return [w for w in range(step * math.ceil(MIN_WIDTH * d / step), d + 1, step)]


def _widest(count: _Counter, layers: int, candidates: list[int], budget: float) -> int | None:
    """The widest candidate whose student of `layers` layers has ≤ budget parameters (binary search)."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if count(layers, candidates[mid]) <= budget:
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best


def params_capacity(teacher, capacity: CapacitySpec, family) -> tuple[CapacitySpec, str]:
    """`capacity` with depth, width and heads picked by the rule for its `params` fraction, and
    the line that says what was chosen."""
    count, teacher_params = _Counter(teacher, family), count_parameters(teacher)
    dims, budget = count.dims, capacity.params * teacher_params
    candidates = widths(dims)
    for layers in range(dims["n_layer"], 0, -1):
        width = _widest(count, layers, candidates, budget)
        if width is not None:
            break
    else:
        smallest = count(1, candidates[0]) / teacher_params
        raise KdmechError(f"capacity params {capacity.params:g} is below the smallest student the rule reaches (1 "
                          f"layer at width {candidates[0]}, heads kept: {smallest:.3f} of the teacher's parameters); "
                          f"accepted: {smallest:.3f} to 1")
    chosen = replace(capacity, depth=layers / dims["n_layer"], width=width / dims["d_model"], heads=1.0)
    shape = family.shape(teacher.config, chosen)
    line = (f"capacity params {capacity.params:g}: {layers} of {dims['n_layer']} layers, d_model {shape['d_model']} "
            f"of {dims['d_model']} (width {chosen.width:g}), d_mlp {shape['d_mlp']}, all {shape['n_head']} heads → "
            f"{count(layers, width):,} of the teacher's {teacher_params:,} parameters "
            f"({count(layers, width) / teacher_params:.4f}, embeddings counted)")
    return chosen, line
