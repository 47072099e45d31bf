"""Device-correct analyses and training step, proven without a GPU.

On a GPU, a tensor an analysis makes without an explicit device (``torch.arange(n)``, an index
``torch.tensor``...) lands on the CPU while the model and prompts sit on CUDA. Here the
models and prompts stay on the CPU and, while kdmech code runs, `strict_devices` is active:

1. ``torch.set_default_device("meta")``: any tensor made without a device lands on ``meta``
   and fails as soon as it meets a real tensor (``cpu_tensor + meta_tensor`` raises), in
   kdmech code and in the third-party code it drives (TransformerLens' bridge, Hugging Face
   forwards: both make their tensors with explicit devices, and pass under it);
2. `StrayTensors`, a TorchFunctionMode stacked on it, which fails on any tensor factory
   (``torch.arange``, ``torch.tensor``, ``torch.zeros``... the list ``set_default_device``
   itself patches) called *from a kdmech source file* without a ``device=`` argument. The
   meta device alone does not catch the commonest stray: a ``meta`` index tensor indexing a
   CPU tensor (``resid[torch.arange(n), pos]``) silently returns uninitialised memory
   instead of raising (PyTorch copies the index to the indexed tensor's device, and a meta
   tensor has no data), so numbers go wrong without an error. Restricting the mode to
   kdmech's frames keeps it the narrowest check: third-party internals are left to (1).

Inside: the teacher side and a full checkpoint analysis with circuits (influence, matching,
A, node circuit, edges by path patching for GPT-2, probes), the rest of `kdmech analyze`
(threshold sweep, noise validation, distribution shift, alignment CI, other matchings, the
competence gate) and the distillation training step (masker, teacher and student forwards
and the loss terms, inside a real Lightning step), for a GPT-2 pair and a BERT pair. The
analysis is also run again outside the context: every number is identical. A source scan
adds the paths these runs do not take: no `torch.<factory>(...)` without `device=`.

Checked by hand: ``torch.arange(len(p))`` without its device put back in
`AblationEngine._intact` fails the GPT-2 analysis here ("analysis/engine.py:<line> torch.arange
without device="; BERT does not take that path) and the source scan; one put back in
`task_metric` fails both."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

import kdmech
from kdmech.analysis.alignment import alignment_ci
from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.circuit import threshold_sweep
from kdmech.analysis.noise import noise_curve
from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.pair import compare
from kdmech.analysis.probes import first_token_divergence
from kdmech.analysis.shift import SHIFTS, distribution_shift
from kdmech.distill.data import corpus_dataset
from kdmech.distill.masking import make_masker
from kdmech.distill.module import DistillationModule
from kdmech.models import CapacitySpec, TinySpec, build_student, family_of, tiny_spec
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import accuracy_and_ld, competent_prompts

SIZES = TinySpec(n_layer=2, n_head=4, n_embd=32, n_positions=64)
KDMECH = os.path.dirname(os.path.abspath(kdmech.__file__)) + os.sep
TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


class StrayTensor(AssertionError):
    pass


class StrayTensors(TorchFunctionMode):
    """Fails on a tensor factory called from kdmech code without `device=` (see the module
    docstring); every such call is also recorded in `found`, in case something catches it."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back  # torch's own Python wrappers
            if frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(KDMECH):
                where = (f"{os.path.relpath(frame.f_code.co_filename, os.path.dirname(KDMECH))}:"
                         f"{frame.f_lineno} torch.{getattr(func, '__name__', func)} without device=")
                self.found.append(where)
                raise StrayTensor(where)
        return func(*args, **kwargs)


@contextlib.contextmanager
def strict_devices():
    """The default device is `meta` and kdmech's device-less factories fail, inside."""
    mode = StrayTensors()
    torch.set_default_device("meta")
    try:
        with mode:
            yield mode
    finally:
        torch.set_default_device(None)
    assert not mode.found, mode.found


def strictly(fn):
    def run(*args, **kwargs):
        with strict_devices():
            return fn(*args, **kwargs)
    return run


def test_the_detector_catches_a_stray_tensor():
    """The meta device alone lets a stray index through; the detector does not."""
    x = torch.arange(12.0, device="cpu").view(3, 4)
    torch.set_default_device("meta")
    try:
        x[torch.arange(3)]  # no error: a meta index reads uninitialised memory
        with pytest.raises(RuntimeError):
            x + torch.ones(4)  # a meta tensor meeting a CPU one does raise
    finally:
        torch.set_default_device(None)
    in_kdmech = compile("torch.arange(3)", os.path.join(KDMECH, "analysis", "stray.py"), "exec")
    mode = StrayTensors()
    with pytest.raises(StrayTensor, match=r"analysis/stray.py:1 torch.arange without device="):
        with mode:
            exec(in_kdmech, {"torch": torch})
    assert len(mode.found) == 1
    with strict_devices():  # the same call outside kdmech, or naming its device, passes
        torch.arange(3)
        exec(compile("torch.arange(3, device='cpu')", os.path.join(KDMECH, "x.py"), "exec"), {"torch": torch})


FACTORIES = {f.__name__ for f in _device_constructors() if hasattr(f, "__name__")}
"""torch.arange, torch.tensor, torch.zeros, ... (what `set_default_device` patches)."""
ANALYSED = ["kdmech/analysis", "kdmech/tasks", "kdmech/distill/module.py",
            "kdmech/distill/losses.py", "kdmech/distill/masking.py", "kdmech/callbacks.py"]


def test_no_factory_without_device_in_the_source():
    """Every `torch.<factory>(...)` call in the analyses and the training step names its
    device, also on paths the runs below do not take (resample and zero ablation,
    greater-than)."""
    root = Path(kdmech.__file__).parent.parent
    files = [p for a in ANALYSED for p in ((root / a).rglob("*.py") if (root / a).is_dir() else [root / a])]
    strays = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and node.func.attr in FACTORIES
                    and not any(k.arg == "device" for k in node.keywords)):
                strays.append(f"{path.relative_to(root)}:{node.lineno} torch.{node.func.attr}")
    assert len(files) > 20 and not strays, strays


# --- a GPT-2 pair and a BERT pair that solve the prompts (circuits need a positive LD) ----

def _teacher(family: str, tokenizer, seed: int):
    model = tiny_spec(family, SIZES).build(tokenizer, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # weights wider than the init so every component moves the logits
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def pair(request, tokenizer):
    """(family, teacher, student, prompts): a random teacher and a half-depth student built
    from it, both with a positive LD on the prompts (the first seed that gives one)."""
    family = request.param
    kind = "masked" if family == "bert" else "causal"
    prompts = tokenize_prompts(NumeralTask(per_type=4, seed=3, cloze=kind == "masked").prompts(),
                               tokenizer, kind)
    for seed in range(40):
        teacher = _teacher(family, tokenizer, seed)
        student = build_student(teacher, CapacitySpec(depth=0.5))[0].eval()
        if min(accuracy_and_ld(m, prompts)["logit_diff"] for m in (teacher, student)) > 0.5:
            return family, teacher, student, prompts
    pytest.fail(f"no seed gives a {family} pair that solves the prompts")


def full_analysis(teacher, student, tokenizer, prompts) -> dict:
    """Every analysis of a checkpoint and of `kdmech analyze`, as JSON-able numbers."""
    options = AnalysisSchedule(filter_prompts=False, allow_weak_teacher=True, min_prompts=0)
    # the gate's filter runs, but a random teacher's top-1 keeps no prompt: all are analysed
    kept, competence = competent_prompts(teacher, prompts, 0.0, 0, allow_weak=True, filter_prompts=False)
    side = TeacherSide.build(teacher, tokenizer, prompts, options, competence.to_json())
    result = analyze_checkpoint(side, student, tokenizer, prompts, step=3, circuits=True)
    tp, sp = side.profile, result.profile
    out = {"record": result.record.pair.to_json(), "circuits": result.record.circuits.to_json(),
           "competence": competence.to_json()}
    out["other_matchings"] = [compare(tp, sp, 3, prompts.task, direction=d, mlp_method=m).to_json()
                              for d, m in (("hungarian", "authors"), ("teacher_to_student", "cka"))]
    out["sweep"] = threshold_sweep(sp.engine, (0.1, 0.2)).to_json()
    out["ci"] = alignment_ci(result.record.pair.matching, sp.lds, tp.lds, n_boot=20)
    out["noise"] = noise_curve(tp, student, tokenizer, prompts, sigmas=(0.0, 0.1), seeds=(0,)).to_json()
    kind = family_of(teacher).kind
    out["shift"] = [r.__dict__ for r in distribution_shift(
        teacher, student, tokenizer, tokenizer, per_type=4, kind=kind,
        shifts={k: SHIFTS[k] for k in ("in-distribution", "longer-6")})]
    out["divergence"] = first_token_divergence(tp, sp, result.record.pair.matching)
    return json.dumps(out, default=str, sort_keys=True)


def test_full_analysis_makes_no_stray_tensor(pair, tokenizer):
    family, teacher, student, prompts = pair
    text = strictly(full_analysis)(teacher, student, tokenizer, prompts)
    got = json.loads(text)
    circuits = got["circuits"]
    assert "error" not in circuits, circuits["error"]
    for who in ("teacher", "student"):
        c = circuits[who]
        assert math.isfinite(c["completeness"]) and c["edges_pruned"] == (family == "gpt2"), (who, c)
    if family == "gpt2":  # path patching scored the edges of a circuit that has some
        assert circuits["teacher"]["edges"] or circuits["student"]["edges"], circuits
    probes = circuits["probes"]["student"]
    assert "error" not in probes["similar_member"] and "error" not in probes["mlp_write_norm"]
    if family == "gpt2":  # the residual probes run on the fast path's runner
        assert all("error" not in probes[k] for k in ("successor", "logit_attribution")), probes
    assert math.isfinite(got["record"]["alignment"]["A"])
    assert got["shift"][0]["error"] == "" and got["shift"][0]["n"] > 0
    # the meta device and the detector change nothing: the same numbers outside them
    assert full_analysis(teacher, student, tokenizer, prompts) == text


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
def test_distillation_step_makes_no_stray_tensor(pair, tokenizer):
    """Two optimizer steps of a real Lightning run (masker for BERT, a narrower student with
    its projection); kdmech's part of each step (`DistillationModule.losses`: masking, the
    teacher's and the students' forwards, the loss terms) under `strict_devices`; Lightning's
    loop, logging, backward and optimizer run outside it (the optimizer's step counters are
    device-less CPU scalars by PyTorch's design, which the meta device would break)."""
    family, teacher, _, _ = pair
    students = {"deep": build_student(teacher, CapacitySpec(depth=0.5))[0],
                "narrow": build_student(teacher, CapacitySpec(depth=0.5, width=0.5))[0]}
    masker = make_masker(family_of(teacher), tokenizer, teacher.config.vocab_size, 0)
    module = DistillationModule(teacher, students, {n: [1] for n in students}, masker=masker)
    losses, seen = module.losses, []

    def strict_losses(*args, **kwargs):
        with strict_devices():
            terms = losses(*args, **kwargs)
        seen.append(terms["loss"].item())
        return terms

    module.losses = strict_losses
    data = corpus_dataset(tokenizer, 16, 0, family_of(teacher).kind)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    before = {n: p.detach().clone() for n, p in module.named_parameters() if not n.startswith("teacher.")}
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    assert trainer.global_step == 2 and len(seen) == 2 and all(math.isfinite(x) for x in seen)
    assert module.projection_named("narrow") is not None
    moved = [n for n, p in module.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any(n.startswith("students.narrow") for n in moved) and any("projections" in n for n in moved)


def test_prompts_follow_the_model(tokenizer):
    """`PromptSet.for_model`: the same object when already on the model's device, every tensor
    moved otherwise (meta stands in for a GPU); `resolve_device` refuses an absent device in
    one line."""
    from kdmech.errors import KdmechError
    from kdmech.tasks.prompt_set import resolve_device

    prompts = tokenize_prompts(NumeralTask(per_type=2, seed=1).prompts(), tokenizer)
    model = torch.nn.Linear(2, 2)
    assert prompts.for_model(model) is prompts and prompts.device.type == "cpu"
    on_meta = prompts.for_model(model.to("meta"))
    assert {t.device.type for t in (on_meta.clean, on_meta.corrupted, on_meta.answers,
                                    on_meta.wrong_answers, on_meta.positions)} == {"meta"}
    assert on_meta.thresholds.device.type == "meta"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(KdmechError, match="torch sees 0 CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(KdmechError, match="not a device"):
        resolve_device("gpu0")
