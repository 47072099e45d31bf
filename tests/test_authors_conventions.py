"""The authors' conventions for A (kdmech.analysis.conventions, docs/method.md §12), each
against an independent computation: Hugging Face hooks, numpy, Python's own `random`, a plain
loop over every eigenvector sign choice."""

import copy
import itertools
import random

import numpy as np
import pytest
import scipy.linalg
import torch

from kdmech.analysis import profile
from kdmech.analysis.alignment import alignment, scored_pairs
from kdmech.analysis.conventions import (AUTHORS_IOI, AUTHORS_NUMERALS, AUTHORS_OTHER, KDMECH,
                                         alignment_influence, authors_conventions, without)
from kdmech.analysis.influence import Influence
from kdmech.analysis.matching import (Match, assign, authors_directions, authors_mlp_similarity, centred,
                                      head_similarity, lapack_directions)
from kdmech.analysis.pair import score_alignment
from kdmech.analysis.presets import ablation_lds, alignment_side
from kdmech.analysis.sampling import authors_samples, without_bos
from kdmech.models import CapacitySpec, build_gpt2_student


@pytest.fixture(scope="module")
def pair_profiles(tiny_gpt2, tokenizer, prompts):
    student, _ = build_gpt2_student(tiny_gpt2, CapacitySpec(depth=0.5))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the student off its teacher copy
        for p in student.parameters():
            if p.ndim == 2:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return profile(tiny_gpt2, tokenizer, prompts), profile(student.eval(), tokenizer, prompts)


def _hf_mean_ld(model, ids, positions, answers, wrongs) -> float:
    with torch.no_grad():
        at = model(input_ids=ids).logits[torch.arange(ids.shape[0]), positions]
    rows = torch.arange(ids.shape[0])
    return (at[rows, answers] - at[rows, wrongs]).mean().item()


# --- zero ablation that keeps the value bias ------------------------------------------------

def test_zero_ablation_keeping_the_value_bias_equals_a_hf_hook_writing_it(tiny_gpt2, tokenizer, prompts):
    """A head's slice of c_proj's input set to its value bias (c_attn's bias, value part),
    an MLP's output to zero, by Hugging Face hooks: no bridge, no kdmech engine."""
    tiny_gpt2 = copy.deepcopy(tiny_gpt2)  # with value biases (the fixture's biases are zero)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for block in tiny_gpt2.transformer.h:
            block.attn.c_attn.bias.copy_(torch.randn(block.attn.c_attn.bias.shape, generator=g))
    prof = profile(tiny_gpt2, tokenizer, prompts)
    kind, names, full, ablated = ablation_lds(prof, "zero", value_bias_kept=True)
    plain = ablation_lds(prof, "zero")[3]
    d = tiny_gpt2.config.n_embd
    d_head = d // tiny_gpt2.config.n_head
    ld = lambda: _hf_mean_ld(tiny_gpt2, prompts.clean, prompts.positions, prompts.answers,  # noqa: E731
                             prompts.wrong_answers)
    assert full.mean().item() == pytest.approx(ld(), abs=1e-5)
    moved = 0.0
    for i, name in enumerate(names):
        layer, rest = name.split(".")
        block = tiny_gpt2.transformer.h[int(layer[1:])]
        if rest == "MLP":
            handle = block.mlp.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
        else:
            cols = slice(int(rest[1:]) * d_head, (int(rest[1:]) + 1) * d_head)
            b_v = block.attn.c_attn.bias[2 * d:][cols]

            def write_bias(m, a, cols=cols, b_v=b_v):
                z = a[0].clone()
                z[..., cols] = b_v
                return (z,)
            handle = block.attn.c_proj.register_forward_pre_hook(write_bias)
        try:
            assert ablated[i].mean().item() == pytest.approx(ld(), abs=1e-5), name
        finally:
            handle.remove()
        moved = max(moved, abs(ablated[i].mean().item() - plain[i].mean().item()))
    assert kind == "zero" and moved > 1e-3  # keeping the bias is not plain zero ablation here


# --- MLP outputs and eigenvectors -----------------------------------------------------------

def test_centred_mlp_outputs_are_those_of_centred_writing_weights(tiny_gpt2, tokenizer, prompts):
    """TransformerLens' center_writing_weights subtracts each row's mean from W_out and the
    mean from b_out: the MLP output of those weights, in numpy from the GELU activations a
    Hugging Face hook records, is kdmech's centred MLP output."""
    prof = profile(tiny_gpt2, tokenizer, prompts)
    acts = {}
    handles = [b.mlp.c_proj.register_forward_pre_hook(lambda m, a, l=l: acts.__setitem__(l, a[0].detach()))
               for l, b in enumerate(tiny_gpt2.transformer.h)]
    with torch.no_grad():
        tiny_gpt2(input_ids=prompts.clean)
    for h in handles:
        h.remove()
    for l, block in enumerate(tiny_gpt2.transformer.h):
        w = block.mlp.c_proj.weight.detach().double().numpy()  # Conv1D: [d_mlp, d_model]
        b = block.mlp.c_proj.bias.detach().double().numpy()
        w_c, b_c = w - w.mean(1, keepdims=True), b - b.mean()
        a = acts[l].double().numpy().reshape(-1, w.shape[0])
        np.testing.assert_allclose(centred(prof.mlp_out[l]).double().numpy(), a @ w_c + b_c, rtol=1e-5, atol=2e-5)


def test_lapack_directions_are_the_covariance_eigenvectors_with_their_own_signs(pair_profiles):
    x = pair_profiles[0].mlp_out[0]
    a = x.double().numpy()
    vals, vecs = np.linalg.eigh(a.T @ a / a.shape[0])
    top = vecs[:, ::-1][:, :3].T
    got = lapack_directions(x).numpy()
    np.testing.assert_allclose(np.abs((got * top).sum(1)), 1.0, atol=1e-4)  # the same vectors up to sign
    cov = (a.T @ a / a.shape[0]).astype(np.float32)  # signs as scipy's LAPACK gives them
    u = scipy.linalg.svd(cov)[0][:, :3].T
    assert np.array_equal(np.sign((got * u).sum(1)), np.ones(3))


# --- the influence A reads, and the pairs it counts ---------------------------------------------

def test_rounding_and_the_mlp_clamp_by_hand():
    inf = Influence("zero", 1.0, {"L0.H0": 80.004, "L0.MLP": -12.5, "L1.MLP": 140.126}, {})
    assert alignment_influence(inf, KDMECH, "teacher") == pytest.approx(
        {"L0.H0": 19.996, "L0.MLP": 112.5, "L1.MLP": 40.126})
    assert alignment_influence(inf, AUTHORS_NUMERALS, "teacher") == {"L0.H0": 20.0, "L0.MLP": 112.5,
                                                                      "L1.MLP": 40.13}
    # IOI: the teacher's MLP retained clamped at 0 (a drop of 100), the student's not
    assert alignment_influence(inf, AUTHORS_IOI, "teacher")["L0.MLP"] == 100.0
    assert alignment_influence(inf, AUTHORS_IOI, "student")["L0.MLP"] == 112.5
    assert alignment_influence(inf, AUTHORS_OTHER, "student")["L0.MLP"] == 100.0
    assert alignment_influence(inf, AUTHORS_OTHER, "student")["L0.H0"] == 20.0  # heads never clamped


def test_heads_below_the_cut_count_twice_in_A():
    matches = [Match("L0.H0", "L0.H1", 0.97), Match("L0.H1", "L0.H1", 0.60), Match("L0.MLP", "L1.MLP", 0.30)]
    s = {"L0.H0": 2.0, "L0.H1": 5.0, "L0.MLP": 3.0}
    t = {"L0.H1": 4.0, "L1.MLP": 1.0}
    # by hand: the list is H1 (below 0.95) once more, then every match
    rows = [(5.0, 4.0, 0.60), (2.0, 4.0, 0.97), (5.0, 4.0, 0.60), (3.0, 1.0, 0.30)]
    i_s, i_t, sim = (np.array(c) for c in zip(*rows))
    expected = np.mean(sim * (1 - np.abs(i_s / i_s.sum() - i_t / i_t.sum())))
    got = alignment(matches, s, t, "sum", double_count_below=0.95)
    assert got.A == pytest.approx(expected) and got.n_pairs == 4
    assert alignment(matches, s, t, "sum").A != pytest.approx(expected)
    assert [m.student for m in scored_pairs(matches, 0.95)] == ["L0.H1", "L0.H0", "L0.H1", "L0.MLP"]


def test_each_task_gets_its_notebooks_conventions():
    assert authors_conventions("numerals") is AUTHORS_NUMERALS is authors_conventions("numerals-words")
    assert AUTHORS_NUMERALS.ablation == "mean" and AUTHORS_NUMERALS.double_count_below == 0.95
    assert authors_conventions("ioi") is AUTHORS_IOI and AUTHORS_IOI.mlp_score == "raw"
    assert authors_conventions("greater-than") is AUTHORS_OTHER
    assert without(AUTHORS_NUMERALS, "eigenvector_signs").eigenvector_signs == "pinned"


# --- their prompt sampling ------------------------------------------------------------------

def test_authors_samples_are_what_their_notebook_draws():
    """Their notebook: random.seed(42), then random.sample on the prompt texts, on the prompt
    records, on the corrupted records, 100 each."""
    texts, records, corrupted = [f"t{i}" for i in range(384)], [{"i": i} for i in range(384)], list(range(384))
    random.seed(42)
    first = random.sample(texts, 100)
    second = random.sample(records, 100)
    third = random.sample(corrupted, 100)
    s = authors_samples(384)
    assert [texts[i] for i in s.patterns] == first
    assert [records[i] for i in s.influence] == second and s.means == third
    assert len(set(s.patterns)) == 100 and s.patterns != s.influence
    assert authors_samples(40).patterns == random.Random(42).sample(range(40), 40)  # fewer: all


def test_influence_without_bos_reads_the_prompt_without_it(tiny_gpt2, tokenizer, prompts):
    bare = without_bos(prompts, tokenizer.bos_token_id)
    assert bool((prompts.clean[:, 0] == tokenizer.bos_token_id).all())
    assert torch.equal(bare.clean, prompts.clean[:, 1:]) and torch.equal(bare.positions, prompts.positions - 1)
    prof = profile(tiny_gpt2, tokenizer, prompts)
    lds = ablation_lds(prof, "mean", prompts=bare, means=bare)
    assert lds[2].mean().item() == pytest.approx(
        _hf_mean_ld(tiny_gpt2, prompts.clean[:, 1:], prompts.positions - 1, prompts.answers,
                    prompts.wrong_answers), abs=1e-5)
    side = alignment_side(prof, AUTHORS_NUMERALS, sampling=True, bos_id=tokenizer.bos_token_id)
    assert side.lds[2].shape[0] == len(prompts)  # fewer than 100 prompts: every one
    assert side.lds[2].mean().item() == pytest.approx(lds[2].mean().item(), abs=1e-6)


# --- the eigenvector sign range ---------------------------------------------------------------

def _plain_A(teacher, student, flips_s, flips_t, conventions) -> tuple[float, float]:
    """A and A_mlp with each layer's directions multiplied by its sign pattern, through the
    ordinary path: the authors' MLP score, the assignment, `alignment`."""
    sd, td = authors_directions(student.mlp_out, teacher.mlp_out, conventions.eigenvector_signs,
                                conventions.centre_mlp_out)
    sd = [d * torch.tensor(f, dtype=d.dtype)[:, None] for d, f in zip(sd, flips_s)]
    td = [d * torch.tensor(f, dtype=d.dtype)[:, None] for d, f in zip(td, flips_t)]
    head_sim = head_similarity(student.patterns, teacher.patterns)
    mlp = authors_mlp_similarity(student.mlp_out, teacher.mlp_out, head_sim, directions=(sd, td),
                                 rescale=conventions.mlp_score == "rescaled")
    heads = lambda p: [n for n in p.nodes if n.is_head]  # noqa: E731
    mlps = lambda p: [n for n in p.nodes if not n.is_head]  # noqa: E731
    matches = assign(head_sim, heads(student), heads(teacher)) + assign(mlp, mlps(student), mlps(teacher))
    a = alignment(matches, alignment_influence(student.influence, conventions, "student"),
                  alignment_influence(teacher.influence, conventions, "teacher"), "sum",
                  conventions.double_count_below)
    return a.A, a.A_mlp


@pytest.mark.parametrize("conventions", [AUTHORS_NUMERALS, AUTHORS_IOI, without(AUTHORS_NUMERALS, "eigenvector_signs")])
def test_the_sign_range_holds_every_sign_choice_and_the_pinned_one(pair_profiles, conventions):
    teacher, student = pair_profiles
    scored = score_alignment(teacher, student, mlp_method="authors", conventions=conventions)
    r = scored.sign_range
    ls, lt = student.mlp_out.shape[0], teacher.mlp_out.shape[0]
    assert r["method"] == "exact" and r["choices"] == r["of"] == 4 ** (ls + lt)
    patterns = [np.array(p) for p in itertools.product((1.0, -1.0), repeat=3)]  # all 8 per layer
    values = []
    for choice in itertools.product(patterns, repeat=ls + lt):
        values.append(_plain_A(teacher, student, choice[:ls], choice[ls:], conventions))
    a, a_mlp = np.array(values).T
    assert r["A"] == pytest.approx([a.min(), a.max()], abs=1e-6)
    assert r["A_mlp"] == pytest.approx([a_mlp.min(), a_mlp.max()], abs=1e-6)
    assert r["A"][0] - 1e-9 <= scored.alignment.A <= r["A"][1] + 1e-9
    assert r["A_as_used"] == pytest.approx(scored.alignment.A, abs=1e-6)
    pinned = score_alignment(teacher, student, mlp_method="authors",
                             conventions=without(conventions, "eigenvector_signs")).alignment.A
    assert r["A"][0] - 1e-6 <= pinned <= r["A"][1] + 1e-6
    assert r["A_pinned"] == pytest.approx(pinned, abs=1e-5)
    assert a.max() - a.min() > 1e-3  # the signs matter on this pair
