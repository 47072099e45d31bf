"""One similarity scale (docs/method.md §7.2): svd3 = mean cosine of the principal angles between top-3
subspaces, a model against itself scores 1 everywhere and A = 1 (svd3, cka), one MLP method
for every student of a run whatever its width, and the authors' notebook MLP score."""

import json

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from kdmech.analysis import compare, profile
from kdmech.analysis.matching import (authors_mlp_similarity, mlp_similarity, resolve_mlp_method,
                                      svd3_similarity, top_directions)
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_gpt2_student


def orthonormal_rows(rng, d, k):
    q, _ = np.linalg.qr(rng.normal(size=(d, k)))
    return q.T  # [k, d]


def rank3_activations(rng, dirs, n=400, scales=(3.0, 2.0, 1.0)):
    """n samples spanning exactly the row space of `dirs` [3, d], with unequal variances."""
    return (rng.normal(size=(n, 3)) * np.array(scales)) @ dirs


def numpy_top3(x):
    """Independent top-3 eigenvectors [d, 3] of the uncentred covariance."""
    vals, vecs = np.linalg.eigh(x.T @ x / x.shape[0])
    return vecs[:, np.argsort(vals)[::-1][:3]]


# --- svd3: principal angles -----------------------------------------------------------------

def test_a_rotated_basis_of_the_same_subspace_scores_one_and_an_orthogonal_one_zero():
    rng = np.random.default_rng(0)
    u = orthonormal_rows(rng, 10, 6)
    rot = orthonormal_rows(rng, 3, 3)  # a 3×3 orthogonal matrix
    a, b, c = torch.tensor(u[:3]), torch.tensor(rot @ u[:3]), torch.tensor(u[3:])
    assert svd3_similarity(a, b) == pytest.approx(1.0, abs=1e-12)
    assert svd3_similarity(a, c) == pytest.approx(0.0, abs=1e-12)
    # The old score, mean |cos| of the 3×3 matrix, is basis-dependent: 1/3 for a with itself,
    # something else for the rotated basis of the same subspace.
    old = lambda p, q: (p @ q.T).abs().mean().item()  # noqa: E731
    assert old(a, a) == pytest.approx(1 / 3) and old(a, b) != pytest.approx(1 / 3, abs=0.01)


def test_svd3_from_activations_same_subspace_different_basis_and_orthogonal():
    rng = np.random.default_rng(1)
    u = orthonormal_rows(rng, 12, 6)
    x = rank3_activations(rng, u[:3], scales=(3.0, 2.0, 1.0))
    same = rank3_activations(rng, u[:3], scales=(1.0, 5.0, 2.5))  # other variances → other eigenbasis
    orth = rank3_activations(rng, u[3:])
    student = torch.tensor(np.stack([same, orth]), dtype=torch.float32)
    teacher = torch.tensor(x[None], dtype=torch.float32)
    sim, used = mlp_similarity(student, teacher, "svd3")
    assert used == "svd3"
    assert sim[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert sim[1, 0].item() == pytest.approx(0.0, abs=1e-5)


def test_svd3_is_the_mean_cosine_of_scipys_principal_angles():
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(16, 16)) * np.linspace(3, 0.2, 16)
    x, y = rng.normal(size=(500, 16)) @ mix, rng.normal(size=(500, 16)) @ mix.T
    expected = np.cos(subspace_angles(numpy_top3(x), numpy_top3(y))).mean()
    sim, _ = mlp_similarity(torch.tensor(x[None]), torch.tensor(y[None]), "svd3")
    assert sim[0, 0].item() == pytest.approx(expected, abs=1e-5)
    assert 0.05 < expected < 0.95  # a non-trivial case


def test_top_directions_are_orthonormal_with_a_fixed_sign():
    x = torch.randn(300, 8) * torch.arange(8, 0, -1)
    u = top_directions(x)
    assert torch.allclose(u @ u.T, torch.eye(3, dtype=u.dtype), atol=1e-10)
    pivots = u.gather(1, u.abs().argmax(1, keepdim=True))
    assert (pivots > 0).all()
    assert torch.equal(top_directions(-x), u)  # XᵀX is the same, so are the directions


# --- a model against itself -----------------------------------------------------------------

@pytest.fixture(scope="module")
def self_profile(tiny_gpt2, tokenizer, prompts):
    return profile(tiny_gpt2, tokenizer, prompts)


@pytest.mark.parametrize("method", ["svd3", "cka", "auto"])
def test_a_model_against_itself_scores_one_everywhere(self_profile, method):
    r = compare(self_profile, self_profile, step=0, task="numerals", mlp_method=method)
    assert r.options["mlp_similarity"] == ("svd3" if method == "auto" else method)
    assert all(m.student == m.teacher for m in r.matching)
    assert all(m.similarity == pytest.approx(1.0, abs=1e-5) for m in r.matching)
    for kind in ("heads", "mlps"):
        diag = np.diag(np.array(r.similarity[kind]["matrix"]))
        assert diag == pytest.approx(np.ones_like(diag), abs=1e-5)
    a = r.alignment
    assert (a.A, a.A_heads, a.A_mlp) == pytest.approx((1.0, 1.0, 1.0), abs=1e-5)


def test_analyze_of_the_teacher_against_itself_gives_A_one(trained_teacher, tmp_path):
    """End to end through `kdmech analyze` (loading both sides from disk, the teacher filter,
    the bootstrap CI), for both equal-width MLP methods."""
    from kdmech.commands.analyze import AnalyzeOptions, analyze

    teacher, _ = trained_teacher
    for method in ("svd3", "cka"):
        options = AnalyzeOptions(per_type=32, mlp_similarity=method, n_boot=20)
        r = analyze(str(teacher), str(teacher), tmp_path / method,
                    analyses=["influence", "matching"], analysis=options, progress=False, wandb="disabled").to_json()
        assert r["matching"]["options"]["mlp_similarity"] == method
        assert all(p["similarity"] == pytest.approx(1.0, abs=1e-5) for p in r["matching"]["pairs"])
        assert r["alignment"]["A"] == pytest.approx(1.0, abs=1e-5)
        assert r["alignment"]["ci95"]["A"] == pytest.approx([1.0, 1.0], abs=1e-5)


# --- one method per run ---------------------------------------------------------------------

def test_resolving_auto_for_a_set_of_widths():
    assert resolve_mlp_method("auto", [1.0, 1.0]) == "svd3"
    assert resolve_mlp_method("auto", [0.5, 1.0]) == "cka"
    assert resolve_mlp_method("auto", [1, 1.0, 0.75]) == "cka"
    assert resolve_mlp_method("auto", None) == "cka"  # widths drawn from a distribution
    assert resolve_mlp_method("cka", [1.0]) == "cka"
    assert resolve_mlp_method("svd3", [1.0, 1.0]) == "svd3"
    assert resolve_mlp_method("authors", [1.0]) == "authors"
    for method, widths in (("svd3", [0.5, 1.0]), ("authors", None), ("bogus", [1.0])):
        with pytest.raises(KdmechError):
            resolve_mlp_method(method, widths)


def test_a_half_width_and_a_full_width_student_are_matched_with_one_method(tiny_gpt2, tokenizer, prompts,
                                                                           self_profile):
    capacities = [CapacitySpec(depth=1.0, width=0.5), CapacitySpec(depth=1.0, width=1.0)]
    method = resolve_mlp_method("auto", [c.width for c in capacities])
    used = set()
    for c in capacities:
        student, _ = build_gpt2_student(tiny_gpt2, c)
        r = compare(self_profile, profile(student.eval(), tokenizer, prompts), 0, "numerals",
                    mlp_method=method)
        used.add(r.options["mlp_similarity"])
    assert used == {"cka"}
    # Per pair, auto alone would have mixed them: svd3 for the full-width student.
    assert mlp_similarity(self_profile.mlp_out, self_profile.mlp_out)[1] == "svd3"


def test_a_sweep_resolves_one_method_from_its_widths():
    from kdmech.commands.sweep import _mlp_method, _point_kwargs

    grid = {"method": "grid", "parameters": {"capacity.width": {"values": [0.5, 1.0]},
                                             "capacity.depth": {"values": [0.5]}}}
    points = [{"capacity.width": 0.5, "capacity.depth": 0.5}, {"capacity.width": 1.0, "capacity.depth": 0.5}]
    assert _mlp_method(grid, points) == "cka"
    assert _mlp_method(grid, points[1:]) == "svd3"
    assert _mlp_method(grid, None) == "cka"  # online: the listed values
    depth_only = {"method": "random", "parameters": {"capacity.depth": {"min": 0.2, "max": 1.0}}}
    assert _mlp_method(depth_only, None) == "svd3"
    sampled = {"method": "bayes", "parameters": {"capacity.width": {"min": 0.5, "max": 1.0}}}
    assert _mlp_method(sampled, None) == "cka"
    fixed = {"method": "grid", "parameters": {"capacity.width": {"value": 1.0},
                                              "analysis.mlp_similarity": {"value": "cka"}}}
    assert _mlp_method(fixed, None) == "cka"
    with pytest.raises(KdmechError):
        _mlp_method({"method": "grid", "parameters": {**grid["parameters"],
                                                      "analysis.mlp_similarity": {"value": "svd3"}}}, points)
    kwargs = _point_kwargs({"capacity.width": 1.0}, "cka")
    assert kwargs["analysis"].mlp_similarity == "cka"
    explicit = _point_kwargs({"capacity.width": 1.0, "analysis.mlp_similarity": "svd3"}, "cka")
    assert explicit["analysis"].mlp_similarity == "svd3"  # an explicit choice is kept


def test_distill_shared_matches_every_width_with_one_method(trained_teacher, tmp_path):
    from kdmech.commands.distill import AnalysisSchedule, DistillTraining
    from kdmech.commands.distill_shared import distill_shared

    teacher, _ = trained_teacher
    capacities = [CapacitySpec(depth=0.5, width=1.0), CapacitySpec(depth=0.5, width=0.5)]
    results = distill_shared(str(teacher), tmp_path, capacities,
                             training=DistillTraining(steps=1, batch_size=4, n_train=16, warmup_steps=0),
                             analysis=AnalysisSchedule(every_n_steps=0, per_type=32, circuits=False),
                             wandb="disabled", progress=False)
    methods = {json.loads(f.read_text())["options"]["mlp_similarity"]
               for r in results for f in (tmp_path / "analysis" / r.name).glob("step_*.json")}
    assert methods == {"cka"}


# --- the authors' notebook score ------------------------------------------------------------

def layer(dirs, d=6, small=None):
    """Activations [n, d] whose uncentred covariance has eigenvectors `dirs` (rows) with
    eigenvalues 9, 4, 1 (and 0.25 along `small`): ± pairs of scaled directions."""
    rows = [a * np.asarray(u, float) for u, a in zip(dirs, (3.0, 2.0, 1.0))]
    if small is not None:
        rows.append(0.5 * np.asarray(small, float))
    rows += [-r for r in rows]
    return torch.tensor(np.array(rows))


def test_authors_score_on_a_hand_made_example():
    e = np.eye(6)
    c, s = 0.8, 0.6
    # Teacher layers: T0 = (e0, e1, e2), T1 = (e3, e2, e1).
    teacher = torch.stack([layer([e[0], e[1], e[2]], small=e[5]), layer([e[3], e[2], e[1]], small=e[5])])
    # Student layers: S0 = T0's basis rotated in the (e0, e1) plane; S1 = (e3, e0, e1); S2 = (e3, e4, e5).
    student = torch.stack([layer([c * e[0] + s * e[1], -s * e[0] + c * e[1], e[2]], small=e[5]),
                           layer([e[3], e[0], e[1]], small=e[5]), layer([e[3], e[4], e[5]], small=e[0])])
    # Raw |mean of the 3×3 cosines|, by hand (row: student layer, column: teacher layer):
    # S0·T0: 0.8 + 0.6 − 0.6 + 0.8 + 1 = 2.6;  S0·T1: 0.6 + 0.8 + 1 = 2.4
    # S1·T0: 1 + 1 = 2;  S1·T1: 1 + 1 = 2;  S2·T0: 0;  S2·T1: 1 (e3·e3)
    raw = [[2.6 / 9, 2.4 / 9], [2 / 9, 2 / 9], [0.0, 1 / 9]]
    heads = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.7, 0.4]])
    h = [0.9, 0.5, 0.2, 0.3, 0.7, 0.4]
    h_mean = sum(h) / 6
    h_std = (sum((v - h_mean) ** 2 for v in h) / 5) ** 0.5  # sample std (ddof 1)
    pos = [v for row in raw for v in row if v > 0]  # the zero (S2·T0) is left out and stays 0
    p_mean = sum(pos) / len(pos)
    p_std = (sum((v - p_mean) ** 2 for v in pos) / len(pos)) ** 0.5  # population std (ddof 0)
    adjusted = [[(v - p_mean) / p_std * h_std + h_mean if v > 0 else 0.0 for v in row] for row in raw]
    top = max(max(row) for row in adjusted)
    expected = np.array([[v / top for v in row] for row in adjusted])

    got = authors_mlp_similarity(student, teacher, heads)
    assert got.numpy() == pytest.approx(expected, abs=1e-6)
    assert got.max().item() == pytest.approx(1.0) and got[2, 0].item() == 0.0
    sim, used = mlp_similarity(student, teacher, "authors", heads)
    assert used == "authors" and torch.equal(sim, got)
    # svd3 on the same layers: S0 and T0 span one subspace; S2 and T0 are orthogonal.
    svd3, _ = mlp_similarity(student, teacher, "svd3")
    assert svd3[0, 0].item() == pytest.approx(1.0, abs=1e-6) and svd3[2, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_authors_score_needs_the_head_similarities_and_equal_widths():
    x = torch.randn(2, 50, 8)
    with pytest.raises(KdmechError, match="head"):
        mlp_similarity(x, x, "authors")
    with pytest.raises(KdmechError, match="equal widths"):
        mlp_similarity(x, torch.randn(2, 50, 16), "authors", torch.rand(4, 4))


def test_compare_records_the_authors_method(self_profile):
    r = compare(self_profile, self_profile, step=0, task="numerals", mlp_method="authors")
    assert r.options["mlp_similarity"] == "authors"
    mlps = np.array(r.similarity["mlps"]["matrix"])
    assert mlps.max() == pytest.approx(1.0)
