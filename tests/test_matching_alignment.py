import numpy as np
import pytest
import torch

from kdmech.analysis import Match, compare, linear_cka, profile
from kdmech.analysis.alignment import alignment_score
from kdmech.analysis.matching import assign, head_similarity, merges, mlp_similarity
from kdmech.analysis.nodes import Node, all_nodes


def np_cka(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    hsic = np.linalg.norm(y.T @ x) ** 2
    return hsic / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_linear_cka_matches_numpy_and_its_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 9))
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(np_cka(x, y), rel=1e-8)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(torch.tensor(x), torch.tensor(3 * x @ q)) == pytest.approx(1.0, abs=1e-9)


def test_svd3_similarity_of_a_layer_with_itself_is_one():
    x = torch.randn(500, 8) * torch.arange(1, 9)
    sim, used = mlp_similarity(x[None], x[None], "svd3")
    assert used == "svd3" and sim[0, 0].item() == pytest.approx(1.0, abs=1e-5)


def test_mlp_similarity_falls_back_to_cka_across_widths():
    sim, used = mlp_similarity(torch.randn(2, 100, 8), torch.randn(3, 100, 16))
    assert used == "cka" and sim.shape == (2, 3)


def test_head_similarity_is_row_cosine_averaged_over_queries():
    a = torch.softmax(torch.randn(1, 2, 4, 4), -1)
    b = torch.softmax(torch.randn(1, 3, 4, 4), -1)
    sim = head_similarity(a, b)
    i, j = 1, 2
    expected = np.mean([np.dot(a[0, i, q], b[0, j, q]) / (a[0, i, q].norm() * b[0, j, q].norm())
                        for q in range(4)])
    assert sim[i, j].item() == pytest.approx(float(expected), rel=1e-5)


def test_assignments():
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.4]])
    s, t = [Node(0, h) for h in range(3)], [Node(1, h) for h in range(2)]
    greedy = assign(sim, s, t)
    assert [(m.student, m.teacher) for m in greedy] == [("L0.H0", "L1.H0"), ("L0.H1", "L1.H0"), ("L0.H2", "L1.H1")]
    assert merges(greedy) == {"L1.H0": ["L0.H0", "L0.H1"]}
    hung = assign(sim, s, t, "hungarian")
    assert sorted((m.student, m.teacher) for m in hung) == [("L0.H0", "L1.H0"), ("L0.H2", "L1.H1")]
    rev = assign(sim, s, t, "teacher_to_student")
    assert [(m.student, m.teacher) for m in rev] == [("L0.H0", "L1.H0"), ("L0.H2", "L1.H1")]


def test_alignment_formula_by_hand():
    matches = [Match("a", "x", 0.5), Match("b", "y", 1.0)]
    s_inf, t_inf = {"a": 30.0, "b": 10.0}, {"x": 10.0, "y": 10.0}
    # Î_S = (0.75, 0.25), Î_T = (0.5, 0.5)
    expected = (0.5 * (1 - 0.25) + 1.0 * (1 - 0.25)) / 2
    assert alignment_score(matches, s_inf, t_inf, "sum") == pytest.approx(expected)
    # max normalization: Î_S = (1, 0), Î_T = (0, 0)
    assert alignment_score(matches, s_inf, t_inf, "max") == pytest.approx((0.5 * 0 + 1.0 * 1) / 2)


def test_a_model_against_itself(tiny_gpt2, tokenizer, prompts):
    p = profile(tiny_gpt2, tokenizer, prompts)
    r = compare(p, p, step=0, task="numerals")
    # every head finds itself (pattern cosine 1) and every MLP itself
    assert all(m.student == m.teacher for m in r.matching if ".H" in m.student)
    assert r.alignment.A == pytest.approx(r.alignment.mean_similarity, abs=1e-6)
    assert r.alignment.A == pytest.approx(1.0, abs=1e-5)
    assert r.alignment.A_heads == pytest.approx(1.0, abs=1e-5)
    assert r.alignment.A_mlp == pytest.approx(1.0, abs=1e-5)
    assert r.worst_drop.ratio == pytest.approx(1.0)
    assert [n.name for n in p.nodes] == [n.name for n in all_nodes(2, 4)]
    assert set(r.influence["student"]) == {n.name for n in all_nodes(2, 4)}


def test_influence_is_abs_of_100_minus_retained(tiny_gpt2, tokenizer, prompts):
    infl = profile(tiny_gpt2, tokenizer, prompts).influence
    for k, v in infl.retained.items():
        assert infl.influence[k] == pytest.approx(abs(100 - v))
    assert infl.worst[1] == max(infl.influence.values())


def test_pair_analysis_json_round_trip(tiny_gpt2, tokenizer, prompts, tmp_path):
    from kdmech.analysis import PairAnalysis

    p = profile(tiny_gpt2, tokenizer, prompts)
    r = compare(p, p, step=7, task="numerals")
    import json
    assert PairAnalysis.from_json(json.loads(json.dumps(r.to_json()))) == r
