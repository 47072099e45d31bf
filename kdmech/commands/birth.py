"""How `distill` makes its students (docs/method.md §11.2): a capacity in parameters resolved
into a shape, the teacher's (or a pruning round's parent's) importance scored on calibration
data for init importance, the students built with their provenance, and what the W&B config
records of each birth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.presets import get_preset
from kdmech.distill.text import DataOptions, Packer, load_text
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_student, family_of, load_lm
from kdmech.models.capacity import InitStrategy
from kdmech.models.importance import DepthMetric, Importance, importance
from kdmech.models.param_budget import count_parameters, params_capacity
from kdmech.models.rounds import compose
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.run_layout import PROVENANCE_JSON


@dataclass(frozen=True)
class ImportanceOptions:
    """How init importance scores the teacher (Minitron; docs/method.md §11.2)."""

    metric: DepthMetric = "mse"
    """Depth score of a bypassed block: mse (normalised MSE of the final hidden states) or
    cosine (mean 1 − cosine)."""
    samples: int = 512
    """Calibration sequences: the task's prompts (the analysis task, in the teacher's form), or
    with --data the corpus' first packed blocks."""
    batch_size: int = 64
    """Calibration sequences per forward pass."""

    def __post_init__(self):
        if self.metric not in ("mse", "cosine"):
            raise KdmechError(f"importance.metric {self.metric!r} is unknown; accepted: mse, cosine")
        if self.samples < 1 or self.batch_size < 1:
            raise KdmechError("importance.samples and importance.batch_size must be ≥ 1")


@dataclass(frozen=True)
class Parent:
    """A pruning round's starting model, pruned to `shape`: the previous round's student (its
    folder holds its provenance), or the teacher itself in the first round (folder None)."""

    folder: Path | None
    shape: dict
    round: int
    rounds: int


def task_prompts(teacher, tokenizer, schedule: AnalysisSchedule):
    """The analysis task's prompts in the teacher's form (cloze for masked LMs), tokenized."""
    family = family_of(teacher)
    texts = get_task(schedule.task, cloze=family.cloze, tokenizer=tokenizer,
                     **get_preset(schedule.preset).task_options(schedule.task, schedule.per_type)).prompts()
    return check_same_tokenization(tokenizer, tokenizer, texts, family.kind)


def calibration(teacher, tokenizer, analysis: AnalysisSchedule, data: DataOptions,
                samples: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(ids, attention mask, where they came from): with --data the corpus' first `samples`
    packed blocks, else `samples` of the task's clean prompts, evenly spaced over the set (the
    same ones for every seed); ragged prompts are masked after their last token."""
    if data.enabled:
        packer = Packer(tokenizer, data.block_size, family_of(teacher).kind)
        blocks = []
        for block in packer.iter_blocks(row["text"] for row in load_text(data, streaming=True)):
            blocks.append(block)
            if len(blocks) == samples:
                break
        if not blocks:
            raise KdmechError("the --data corpus holds less than one block of text for importance calibration; "
                              "lower data.block_size")
        ids = torch.tensor(blocks)
        where = data.dataset or ",".join(data.files)
        return ids, torch.ones_like(ids), f"{len(blocks)} blocks of {data.block_size} tokens of {where}"
    prompts = task_prompts(teacher, tokenizer, analysis)
    n, m = len(prompts), min(samples, len(prompts))
    keep = sorted({round(i * (n - 1) / max(1, m - 1)) for i in range(m)})
    ids = prompts.clean[keep]
    if prompts.texts.ragged:
        mask = (torch.arange(ids.shape[1]) <= prompts.positions[keep, None]).long()
    else:
        mask = torch.ones_like(ids)
    return ids, mask, f"{len(keep)} {analysis.task} prompts (clean, {prompts.kind} form)"


def score(model, tokenizer, analysis: AnalysisSchedule, data: DataOptions, options: ImportanceOptions) -> Importance:
    """The importance of `model`'s blocks and width components on the calibration data."""
    ids, mask, where = calibration(model, tokenizer, analysis, data, options.samples)
    print(f"importance: scoring {type(model).__name__} on {where} ({options.metric})")
    return importance(model, ids, mask, options.metric, data=where, batch_size=options.batch_size)


def resolve_capacity(teacher, capacity: CapacitySpec) -> CapacitySpec:
    """A capacity in parameters with its depth, width and heads picked (the choice printed);
    any other as given."""
    if capacity.params is None:
        return capacity
    chosen, line = params_capacity(teacher, capacity, family_of(teacher))
    print(line)
    return chosen


def born(teacher, tokenizer, capacities: list[CapacitySpec], names: list[str], init: InitStrategy, seed: int,
         options: ImportanceOptions, analysis: AnalysisSchedule, data: DataOptions,
         parent: Parent | None = None) -> dict[str, tuple]:
    """name → (student, provenance): built from the teacher, or in a pruning round from
    `parent` (its provenance composed into the teacher's indices). Provenance carries the
    parameters, the teacher's and their exact ratio."""
    source, parent_prov = teacher, None
    if parent is not None and parent.folder is not None:
        source = load_lm(str(parent.folder))[0]
        parent_prov = json.loads((parent.folder / PROVENANCE_JSON).read_text())
    scores = score(source, tokenizer, analysis, data, options) if init == "importance" else None
    built, total = {}, count_parameters(teacher)
    for name, capacity in zip(names, capacities):
        if parent is None:
            capacity = resolve_capacity(teacher, capacity)
        student, prov = build_student(source, capacity, init, seed=seed, importance=scores,
                                      shape=parent.shape if parent else None)
        if parent_prov is not None:
            prov = compose(parent_prov, prov) | {"parent": str(parent.folder), "teacher": parent_prov["teacher"]}
        if parent is not None:
            prov |= {"round": parent.round, "rounds": parent.rounds}
        n = count_parameters(student)
        built[name] = (student, prov | {"parameters": n, "teacher_parameters": total, "parameter_ratio": n / total})
    return built


def birth_config(built: dict) -> dict:
    """What the W&B config records of each student's birth (the full scores stay in its
    provenance.json): init, shape, exact parameter ratio, the teacher layers and heads kept,
    the pruning round, and for init importance the calibration data and the layer ranking."""
    out = {}
    for name, (_, prov) in built.items():
        entry = {k: prov[k] for k in ("init", "shape", "parameter_ratio", "layer_map", "heads_kept", "round", "rounds")
                 if k in prov}
        imp = prov.get("importance")
        if imp:
            entry["importance"] = {k: imp[k] for k in ("metric", "data", "tokens", "sequences", "layer_ranking",
                                                       "blocks")}
        out[name] = entry
    return out
