"""The inits of one capacity compared across seeds (kdmech.report.inits): grouping by init as
by seed, the call-out rule on A, the worst drop and the circuit size, circuit agreement
(Jaccard of node sets, nodes named by the teacher component they were copied from) against the
seeds' own."""

from types import SimpleNamespace

import pytest

from kdmech.analysis.pair import NodeDrop, WorstDrop
from kdmech.report.collect import StudentRecord
from kdmech.report.inits import born_with, circuit_origins, circuits_text, compare_inits, jaccard
from kdmech.report.replicates import group_by_capacity


def _record(init, seed, a, worst, nodes, layers, heads=None):
    final = SimpleNamespace(alignment=SimpleNamespace(A=a), logit_diff={"student": 2.0, "teacher": 5.0},
                            worst_drop=WorstDrop(NodeDrop("L1.H0", 5.0), NodeDrop("L0.H0", worst), worst / 5.0))
    return StudentRecord(name=f"d0.5-w1-h1-{init}-s{seed}-49dccb", capacity={"depth": 0.5, "width": 1.0, "heads": 1.0},
                         parameters=None, teacher_parameters=None, steps=[final], seed=seed, init=init,
                         circuit={"threshold": 0.2, "student": {"nodes": nodes}},
                         layer_map={str(i): t for i, t in enumerate(layers)},
                         heads_kept=heads or {str(i): [0, 1] for i in range(len(layers))})


EVERY_K = {"0": [0, 1], "1": [0, 1]}
IMPORTANCE = {"0": [2, 3], "1": [0, 2]}
RECORDS = [
    # every_k (teacher layers 0, 3; heads 0, 1): A ≈ 0.50; circuits T0.H0, T3.MLP (+ T3.H1)
    _record("every_k", 0, 0.50, 40.0, ["L0.H0", "L1.MLP"], [0, 3], EVERY_K),
    _record("every_k", 1, 0.52, 42.0, ["L0.H0", "L1.MLP"], [0, 3], EVERY_K),
    _record("every_k", 2, 0.51, 90.0, ["L0.H0", "L1.MLP", "L1.H1"], [0, 3], EVERY_K),
    # importance (layers 0, 1; heads 2, 3 and 0, 2): A ≈ 0.80 (beyond the spread), worst drop within
    # it; the same student names L0.H0 and L1.MLP, born from other teacher components
    _record("importance", 0, 0.80, 60.0, ["L0.H0", "L1.MLP"], [0, 1], IMPORTANCE),
    _record("importance", 1, 0.81, 45.0, ["L0.H0", "L1.MLP"], [0, 1], IMPORTANCE),
    _record("importance", 2, 0.82, 70.0, ["L0.H0", "L1.MLP", "L0.MLP"], [0, 1], IMPORTANCE),
]


def test_jaccard():
    assert jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3) and jaccard([], []) == 1.0


def test_inits_are_grouped_like_seeds_and_compared_beyond_the_seed_spread():
    groups = group_by_capacity(RECORDS)
    assert [(g.label, g.init, g.seeds) for g in groups] == [
        ("d0.5-w1-h1-49dccb (every_k)", "every_k", [0, 1, 2]),
        ("d0.5-w1-h1-49dccb (importance)", "importance", [0, 1, 2])]
    (c,) = compare_inits(groups)
    assert c.label == "d0.5-w1-h1-49dccb" and [g.init for g in c.groups] == ["every_k", "importance"]
    # A: 0.51 ± 0.025 against 0.81 ± 0.025 → named; worst drop: 57 ± 67 against 58 ± 31 → not;
    # circuit size 2.33 ± 1.43 on both → not
    assert [(d.metric, d.low.init, d.high.init) for d in c.differences] == [("A", "every_k", "importance")]
    (circ,) = c.circuits
    assert circuit_origins(RECORDS[2]) == ["T0.H0", "T3.H1", "T3.MLP"]
    assert circuit_origins(RECORDS[5]) == ["T0.H2", "T0.MLP", "T1.MLP"]
    # within each init: J(s0,s1)=1, J(s0,s2)=J(s1,s2)=2/3 → 7/9; between: the two inits share no
    # teacher component although their student node names coincide
    assert circ.within_a == pytest.approx(7 / 9) and circ.within_b == pytest.approx(7 / 9)
    assert circ.between == 0.0
    assert circ.beyond_spread and "changes the circuit beyond the seed spread" in circ.text()
    assert circuits_text(groups[0]) == "{T0.H0, T3.MLP} ×2 | {T0.H0, T3.H1, T3.MLP}"
    assert c.to_json()["differences"] == [{"metric": "A", "lower": "every_k", "higher": "importance"}]


def test_one_init_per_capacity_compares_nothing_and_labels_stay():
    groups = group_by_capacity(RECORDS[:3])
    assert [g.label for g in groups] == ["d0.5-w1-h1-49dccb"] and compare_inits(groups) == []


def test_born_with_names_the_teacher_layers_and_heads():
    groups = group_by_capacity(RECORDS)
    assert born_with(groups[1]) == ("[0, 1]", "L0←T0.H[2, 3]; L1←T1.H[0, 2]")
    rnd = _record("random", 0, 0.1, 1.0, ["L0.H1"], [], {})
    assert born_with(group_by_capacity([rnd])[0]) == ("none (random)", "none (random)")
    assert circuit_origins(rnd) == ["L0.H1"]  # nothing copied: the student's own name
