import math

import numpy as np
import pytest

from kdmech.analysis.influence import Influence
from kdmech.analysis.sensitivity import (bootstrap_mean_ci, drop_stats, gini, sensitivity,
                                         severity)


def infl(drops: dict[str, float]) -> Influence:
    return Influence("mean", 5.0, {k: 100 - v for k, v in drops.items()}, dict(drops))


def test_gini_known_values():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)  # (n-1)/n for one holder
    x = np.array([1.0, 2, 3, 4])
    by_pairs = np.abs(x[:, None] - x[None]).sum() / (2 * len(x) ** 2 * x.mean())
    assert gini(x) == pytest.approx(by_pairs)


def test_severity_by_hand():
    # retained 100 → m 0 → 0; retained 40 → m 60 → (60−20)/80 = 0.5; retained −30 → m 100 → 1
    assert severity(np.array([100.0, 40.0, -30.0])) == pytest.approx((0 + 0.5 + 1) / 3)


def test_drop_stats():
    drops = {f"L0.H{h}": float(h) for h in range(40)} | {"L0.MLP": 7.0}
    s = drop_stats(infl(drops), heads=True)
    assert s.n == 40 and s.mean == pytest.approx(19.5) and s.median == pytest.approx(19.5)
    k = math.ceil(0.05 * 40)
    assert k == 2 and s.worst_5pct_mean == pytest.approx((39 + 38) / 2)
    assert s.worst == 39 and s.worst_node == "L0.H39"
    assert s.mean_ci95[0] < 19.5 < s.mean_ci95[1]
    assert bootstrap_mean_ci(np.arange(40.0)) == s.mean_ci95  # fixed seed: reproducible


def test_compression_slope_and_brittleness_flag():
    teacher = infl({"L0.H0": 10.0, "L0.H1": 2.0, "L0.MLP": 5.0})
    student = infl({"L0.H0": 30.0, "L0.H1": 10.0, "L0.MLP": 5.0})
    s = sensitivity(teacher, student, teacher_params=100, student_params=60, n_boot=500)
    assert s.compression == pytest.approx(0.4)
    assert s.delta_mean["heads"] == pytest.approx(14.0)
    assert s.slope["heads"] == pytest.approx(14.0 / 0.4)
    assert s.worst_ratio == pytest.approx(3.0) and s.brittle


def test_results_round_trip_through_json():
    import json

    from kdmech.analysis.circuit import Circuit
    from kdmech.analysis.noise import NoiseCurve, summarise
    from kdmech.analysis.sensitivity import Sensitivity

    s = sensitivity(infl({"L0.H0": 10.0, "L0.H1": 2.0, "L0.MLP": 5.0}),
                    infl({"L0.H0": 30.0, "L0.H1": 10.0, "L0.MLP": 5.0}), 100, 60, n_boot=200)
    assert Sensitivity.from_json(json.loads(json.dumps(s.to_json()))) == s
    n = summarise([0.0, 0.1, 1.0], [0, 1], [[0.9, 0.8], [0.7, 0.6], [0.5, 0.5]])
    assert NoiseCurve.from_json(json.loads(json.dumps(n.to_json()))) == n
    from kdmech.analysis.edges import Edge
    c = Circuit(0.2, ["L0.H1", "L1.MLP"], [Edge.from_json(["L0.H1", "L1.MLP"])], 85.0, 10.0, 2, "mean", True,
                ["L0.H1", "L1.MLP"])
    assert Circuit.from_json(json.loads(json.dumps(c.to_json()))) == c
