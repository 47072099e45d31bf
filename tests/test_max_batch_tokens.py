"""`--analysis.max_batch_tokens`: a memory budget on every analysis forward.

The budget is checked independently of kdmech's batching code: plain PyTorch forward
pre-hooks on the Hugging Face model's own modules (embeddings, every block, its LayerNorms and
linear layers, the final LayerNorm and the head) record the prompt rows and tokens of every
input they see. The analyses deep-copy the model (the bridge, the GPT-2 fast path), and a deep
copy keeps its modules' hooks, so every forward of every copy is recorded. With a budget of a
few prompts, no recorded input may exceed it; without one the same hooks see forwards of every
prompt at once, so the check can fail. The budgeted numbers must be the unbudgeted ones:
per-prompt LDs to float rounding, the same circuit nodes and edges.
"""

import copy
import dataclasses
import json
import re

import pytest
import torch

from kdmech.analysis import boot, corrupted_activations
from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.circuit import path_patching, prune_edges, prune_nodes
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.influence import per_prompt_lds
from kdmech.analysis.noise import noise_curve
from kdmech.analysis.options import AnalysisOptions, AnalysisSchedule, AnalyzeOptions
from kdmech.analysis.presets import ablation_lds
from kdmech.analysis.shift import distribution_shift, rows_to_json
from kdmech.analysis.profile import profile
from kdmech.cli import main
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_student
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import competent_prompts
from kdmech.tasks.prompt_set import PromptSet

LD_ATOL = 1e-5


def _first_tensor(args, kwargs):
    for x in (*args, *kwargs.values()):
        if isinstance(x, torch.Tensor):
            return x
    return None


class Forwards:
    """(rows, tokens) of every input the given modules see, from forward pre-hooks."""

    def __init__(self, modules):
        self.seen: list[tuple[str, int, int]] = []
        self.handles = [m.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                        for name, m in modules]

    def _hook(self, name):
        def record(module, args, kwargs):
            x = _first_tensor(args, kwargs)
            if x is None:
                return
            if x.ndim == 1:  # position ids of one row
                rows, tokens = 1, x.shape[0]
            elif x.ndim == 2 and not x.is_floating_point():  # token ids [B, T]
                rows, tokens = x.shape[0], x.numel()
            elif x.ndim == 2:  # hidden states at one position per row [B, d]
                rows, tokens = x.shape[0], x.shape[0]
            else:  # hidden states [B, T, d]
                rows, tokens = x.shape[0], x.shape[0] * x.shape[1]
            self.seen.append((name, rows, tokens))
        return record

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def over(self, rows: int, tokens: int) -> list:
        return [s for s in self.seen if s[1] > rows or s[2] > tokens]

    @property
    def max_rows(self) -> int:
        return max(r for _, r, _ in self.seen)


def watched(model, prefix: str) -> list:
    """The modules an analysis forward goes through, by their plain PyTorch types."""
    kinds = (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.Linear)
    out = []
    for name, m in model.named_modules():
        is_block = re.fullmatch(r"(transformer\.h|bert\.encoder\.layer)\.\d+", name)
        if is_block or isinstance(m, kinds) or type(m).__name__ == "Conv1D":
            out.append((f"{prefix}.{name}", m))
    return out


def hf_logit_diff(model, prompts) -> torch.Tensor:
    """Per-prompt LD from the model's own forward, one prompt at a time (no kdmech code)."""
    lds = []
    with torch.no_grad():
        for i in range(len(prompts)):
            ids = prompts.clean[i:i + 1]
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, prompts.positions[i]]
            lds.append(logits[prompts.answers[i]] - logits[prompts.wrong_answers[i]])
    return torch.stack(lds)


def oriented(model, prompts):
    """The prompts, answers swapped if needed so that the random model's mean LD is positive
    (circuit discovery needs a positive LD)."""
    if hf_logit_diff(model, prompts).mean() > 0:
        return prompts
    return dataclasses.replace(prompts, answers=prompts.wrong_answers, wrong_answers=prompts.answers)


def assert_lds_equal(a: tuple, b: tuple):
    """Two `per_prompt_lds` tuples: same nodes, per-prompt LDs equal to float rounding."""
    assert a[0] == b[0] and a[1] == b[1]
    torch.testing.assert_close(a[2], b[2], atol=LD_ATOL, rtol=0)
    torch.testing.assert_close(a[3], b[3], atol=LD_ATOL, rtol=0)


def edge_pruning(engine, nodes: set) -> tuple:
    """Kept edges and path-patching scores of the node circuit, and of a wider one (every
    other node besides the circuit's, the rest ablated): a random tiny model's circuit may have
    a node or two, too few edges to compare."""
    wide = set(engine.bridged.nodes[::2]) | nodes
    return tuple((prune_edges(engine, c, 0.2), path_patching(engine, c)) for c in (nodes, wide))


def assert_edges_equal(runs: tuple, runs0: tuple):
    for a, b in zip(runs, runs0):
        assert_scores_equal(a, b)
    assert len(runs[-1][1].scores) > 10


def assert_scores_equal(a: tuple, b: tuple):
    """(kept edges, `EdgeScores`) of two runs: the same edges, every path-patched score and the
    baseline equal to float rounding."""
    (edges, scores), (edges0, scores0) = a, b
    assert edges == edges0
    assert scores.baseline == pytest.approx(scores0.baseline, abs=LD_ATOL)
    assert scores.scores.keys() == scores0.scores.keys()
    assert all(abs(scores.scores[k] - scores0.scores[k]) < LD_ATOL for k in scores.scores)


# --- GPT-2: the fast path, through the options and the checkpoint analysis ---------------

@pytest.fixture(scope="module")
def gpt2_pair(tiny_gpt2, tokenizer):
    teacher = copy.deepcopy(tiny_gpt2)
    student = build_student(teacher, CapacitySpec(depth=0.5), "every_k", seed=0)[0].eval()
    prompts = oriented(teacher, tokenize_prompts(NumeralTask(per_type=8, seed=3).prompts(), tokenizer))
    return teacher, student, prompts


def checkpoint_analysis(teacher, student, tokenizer, prompts, kind: str, budget: int):
    """Teacher side, one checkpoint analysis of the student (influence, matching, A), node and
    edge pruning of the teacher's circuit, all under `--analysis.max_batch_tokens budget`."""
    options = AnalysisSchedule(ablation=kind, filter_prompts=False, min_prompts=0,
                               allow_weak_teacher=True, circuits=True, max_batch_tokens=budget)
    side = TeacherSide.build(teacher, tokenizer, prompts, options, {"weak": True})
    result = analyze_checkpoint(side, student, tokenizer, prompts, 0)
    engine = side.profile.engine
    nodes, _ = prune_nodes(engine, 0.2)
    return side, result, nodes, edge_pruning(engine, nodes)


@pytest.mark.parametrize("kind", ["mean", "resample"])
def test_gpt2_checkpoint_analysis_within_budget_same_numbers(gpt2_pair, tokenizer, kind):
    teacher, student, prompts = gpt2_pair
    n, t = len(prompts), prompts.seq_len
    budget = 3 * t + t // 2  # three prompts' worth (the rest of a row does not fit)
    modules = [*watched(teacher, "teacher"), *watched(student, "student")]
    with Forwards(modules) as free:
        side0, result0, nodes0, edges0 = checkpoint_analysis(teacher, student, tokenizer, prompts, kind, 0)
    with Forwards(modules) as budgeted:
        side, result, nodes, edges = checkpoint_analysis(teacher, student, tokenizer, prompts, kind, budget)

    # the hooks see the analyses' forwards: whole batches without a budget ...
    assert free.max_rows == n and len(budgeted.seen) > 100
    # ... and nothing over three prompts with it
    assert budgeted.over(3, budget) == []
    assert budgeted.max_rows == 3

    # the same numbers
    assert side.profile.engine.row_chunks != side0.profile.engine.row_chunks
    assert_lds_equal(side.profile.lds, side0.profile.lds)
    assert_lds_equal(result.profile.lds, result0.profile.lds)
    # the intact LD against the model's own forward (independent of both runs)
    torch.testing.assert_close(side.profile.lds[2], hf_logit_diff(teacher, prompts), atol=1e-4, rtol=1e-4)
    for who in ("teacher", "student"):
        a, b = result.record.pair.influence[who], result0.record.pair.influence[who]
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-3 for k in a), who  # percent
    assert result.record.pair.alignment.A == pytest.approx(result0.record.pair.alignment.A, abs=1e-6)
    assert [m.to_json() for m in result.record.pair.matching] == [m.to_json() for m in result0.record.pair.matching]
    assert nodes == nodes0 and 0 < len(nodes) < len(side.profile.nodes)
    assert_edges_equal(edges, edges0)


def test_gate_preset_and_noise_within_budget_same_numbers(gpt2_pair, tokenizer):
    """The competence gate, the authors preset's zero-ablation LDs, the noise curve's
    profiles (noisy copies of the student keep its hooks) and the distribution shift hold
    the budget too."""
    teacher, student, prompts = gpt2_pair
    budget = 2 * prompts.seq_len

    def run(budget):
        _, competence = competent_prompts(teacher, prompts, 0.0, 0, True, False, max_batch_tokens=budget)
        prof = profile(teacher, tokenizer, prompts, "mean", max_batch_tokens=budget)
        zero = ablation_lds(prof, "zero")
        curve = noise_curve(prof, student, tokenizer, prompts, sigmas=(0.0, 0.5), seeds=(0,),
                            max_batch_tokens=budget)
        shift = distribution_shift(teacher, student, tokenizer, tokenizer, per_type=4,
                                   shifts={"in-distribution": {}, "longer-6": {"n_items": 6, "start_max": 4}},
                                   max_batch_tokens=budget)
        return competence, zero, curve, rows_to_json(shift)

    modules = [*watched(teacher, "teacher"), *watched(student, "student")]
    with Forwards(modules) as free:
        competence0, zero0, curve0, shift0 = run(0)
    with Forwards(modules) as budgeted:
        competence, zero, curve, shift = run(budget)
    assert free.max_rows == len(prompts)
    assert budgeted.over(2, budget) == [] and budgeted.max_rows == 2
    assert any(name.startswith("student") for name, _, _ in budgeted.seen)
    assert competence == competence0
    assert_lds_equal(zero, zero0)
    assert zero[0] == "zero"
    assert sum(curve.A, []) == pytest.approx(sum(curve0.A, []), abs=1e-6)
    for row, row0 in zip(shift, shift0, strict=True):
        assert row["n"] == row0["n"] > 0 and not row["error"]
        for who in ("teacher", "student"):
            assert row[who]["top1"] == row0[who]["top1"]
            assert row[who]["logit_diff"] == pytest.approx(row0[who]["logit_diff"], abs=LD_ATOL)


# --- GPT-2 on the bridge: stacked copies count against the budget ------------------------

def test_gpt2_bridge_stacking_within_budget_same_numbers(gpt2_pair, tokenizer):
    teacher, _, prompts = gpt2_pair
    model = copy.deepcopy(teacher)
    n, t = len(prompts), prompts.seq_len
    rows = 10  # slices of 10, 10, 4 prompts: two copies of the last slice stack in one forward
    assert n % rows and 2 * (n % rows) <= rows

    def run(budget):
        bridged = boot(model, tokenizer)
        source = corrupted_activations(bridged, prompts, batch_size=rows if budget else 64)
        engine = AblationEngine(bridged, prompts, "mean", source, max_rows=4096, fast_path=False,
                                max_batch_tokens=budget)
        assert engine.runner is None
        lds = per_prompt_lds(engine)
        nodes, _ = prune_nodes(engine, 0.2)
        return lds, nodes, edge_pruning(engine, nodes)

    with Forwards(watched(model, "model")) as free:
        lds0, nodes0, edges0 = run(0)
    with Forwards(watched(model, "model")) as budgeted:
        lds, nodes, edges = run(rows * t)
    # without a budget every single-node ablation of a layer shares one forward
    assert free.max_rows > n
    assert budgeted.over(rows, rows * t) == [] and budgeted.max_rows == rows
    assert any(r == 2 * (n % rows) for _, r, _ in budgeted.seen)  # stacked copies did run
    assert_lds_equal(lds, lds0)
    assert nodes == nodes0
    assert_edges_equal(edges, edges0)


# --- BERT: its fast path (bert_runner: the reference's batches, from the first ablated layer) ---

@pytest.fixture(scope="module")
def bert_and_cloze(tokenizer, random_bert):
    model = random_bert(layers=2, seed=0)
    cloze = tokenize_prompts(NumeralTask(per_type=6, seed=2, cloze=True).prompts(), tokenizer, kind="masked")
    return model, oriented(model, cloze)


def test_bert_within_budget_same_numbers(bert_and_cloze, tokenizer):
    model, prompts = bert_and_cloze
    n, t, kind = len(prompts), prompts.seq_len, "mean"
    budget = 3 * t

    def run(budget):
        prof = profile(model, tokenizer, prompts, kind, max_batch_tokens=budget)
        assert prof.engine.runner is not None
        nodes, _ = prune_nodes(prof.engine, 0.2)
        every = prof.nodes  # several nodes ablated at once, as node pruning does
        sets = prof.engine.metrics([every[::2], every[1::3], every], per_prompt=True)
        return prof, (nodes, sets)

    with Forwards(watched(model, "bert")) as free:
        prof0, nodes0 = run(0)
    with Forwards(watched(model, "bert")) as budgeted:
        prof, nodes = run(budget)
    assert free.max_rows == min(n, 64) > 3 and len(budgeted.seen) > 100
    assert budgeted.over(3, budget) == [] and budgeted.max_rows == 3
    assert_lds_equal(prof.lds, prof0.lds)
    torch.testing.assert_close(prof.lds[2], hf_logit_diff(model, prompts), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prof.patterns, prof0.patterns, atol=1e-6, rtol=0)
    torch.testing.assert_close(prof.mlp_out, prof0.mlp_out, atol=1e-5, rtol=0)
    assert nodes[0] == nodes0[0]  # (a random BERT's circuit may be empty)
    for a, b in zip(nodes[1], nodes0[1]):
        torch.testing.assert_close(a, b, atol=LD_ATOL, rtol=0)


# --- the option itself --------------------------------------------------------------------

def test_default_is_no_budget():
    assert AnalysisOptions().max_batch_tokens == 0
    assert AnalyzeOptions(max_batch_tokens=512).max_batch_tokens == 512


@pytest.mark.parametrize("cls", [AnalysisOptions, AnalysisSchedule, AnalyzeOptions])
@pytest.mark.parametrize("value", [-1, -512, 2.5])
def test_bad_value_is_a_one_line_error(cls, value):
    with pytest.raises(KdmechError) as e:
        cls(max_batch_tokens=value)
    assert len(str(e.value).splitlines()) == 1
    assert "max_batch_tokens" in str(e.value) and repr(value) in str(e.value)


def test_bad_value_on_the_command_line(tmp_path, capsys):
    code = main(["analyze", "--teacher", "x", "--student", "y", "--out", str(tmp_path / "out"),
                 "--analysis.max_batch_tokens", "-8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("kdmech: error:"), err
    assert "max_batch_tokens" in err and "-8" in err
    assert not (tmp_path / "out").exists()


# --- the command: every forward of `kdmech analyze` -------------------------------------

def test_analyze_command_within_budget_same_results(gpt2_pair, tokenizer, tmp_path):
    """`analyze` with `max_batch_tokens`: a global forward pre-hook on every module records
    each GPT-2 block's input (the command loads its own copies of the models), so every
    forward of the command is seen: the competence gate, profiles, noise, shift."""
    from kdmech.commands.analyze import analyze

    teacher, student, _ = gpt2_pair
    for name, model in (("teacher", teacher), ("student", student)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    seen = []

    def record(module, args):
        if type(module).__name__ == "GPT2Block":
            seen.append((args[0].shape[0], args[0].shape[0] * args[0].shape[1]))

    def run(budget, out):
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
        try:
            analyze(str(tmp_path / "teacher"), str(tmp_path / "student"), out,
                    analyses=["influence", "matching", "sensitivity", "noise", "shift"],
                    analysis=AnalyzeOptions(per_type=6, filter_prompts=False, allow_weak_teacher=True,
                                            n_boot=20, noise_sigmas=(0.0, 0.5), noise_seeds=1,
                                            max_batch_tokens=budget),
                    progress=False, wandb="disabled")
        finally:
            handle.remove()
        return json.loads((out / "analysis.json").read_text()), list(seen)

    free, free_seen = run(0, tmp_path / "free")
    t = PromptSet.load(tmp_path / "free" / "prompts.json").seq_len
    budget = 3 * t
    budgeted, budgeted_seen = run(budget, tmp_path / "budgeted")
    assert max(r for r, _ in free_seen) >= free["n_prompts"] > 3
    assert len(budgeted_seen) > 100 and max(tok for _, tok in budgeted_seen) <= budget
    assert budgeted["options"]["max_batch_tokens"] == budget and free["options"]["max_batch_tokens"] == 0
    for who in ("teacher", "student"):
        a, b = budgeted["influence"][who], free["influence"][who]
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-3 for k in a)
    assert budgeted["alignment"]["A"] == pytest.approx(free["alignment"]["A"], abs=1e-6)
    assert sum(budgeted["noise"]["A"], []) == pytest.approx(sum(free["noise"]["A"], []), abs=1e-6)
    for row, row0 in zip(budgeted["shift"], free["shift"], strict=True):
        assert row["n"] == row0["n"] and row["error"] == row0["error"]
        for who in ("teacher", "student"):
            if row0[who]:
                assert row[who]["top1"] == row0[who]["top1"]
                assert row[who]["logit_diff"] == pytest.approx(row0[who]["logit_diff"], abs=LD_ATOL)
