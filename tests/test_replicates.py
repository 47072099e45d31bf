"""Seeds as replicates: across-seed statistics per capacity, the rule that
names a difference between capacities only where it exceeds the seed spread, and the report
over a small real sweep (two capacities × two seeds)."""

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from kdmech.analysis.analyze_result import AnalyzeResult
from kdmech.analysis.pair import NodeDrop, WorstDrop
from kdmech.report.collect import StudentRecord, record_seed
from kdmech.report.replicates import Interval, differences, group_by_capacity, has_replicates, interval


def test_interval_is_the_student_t_interval():
    values = [1.0, 2.0, 4.0, 7.0]
    iv = interval(values)
    # independently: scipy's t interval around the mean with the standard error of the mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert iv.n == 4 and iv.mean == pytest.approx(3.5)
    assert iv.sd == pytest.approx(math.sqrt(7.0))  # squared deviations 6.25 + 2.25 + 0.25 + 12.25 = 21, / 3
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert iv.half_width == pytest.approx(3.182446305 * math.sqrt(7.0) / 2)  # t(0.975, 3) · s / √n
    assert iv.text(".2f") == f"3.50 [{low:.2f}, {high:.2f}]"


def test_one_seed_has_no_interval_and_missing_values_are_left_out():
    one = interval([0.4, None, float("nan"), float("inf")])
    assert one.n == 1 and one.mean == pytest.approx(0.4)
    assert one.half_width is None and one.low is None and one.high is None
    assert "no interval" in one.text()
    assert interval([]).text() == "–" and interval([None]).mean is None


def test_a_difference_is_called_out_only_beyond_the_seed_spread():
    low, high = interval([0.10, 0.12, 0.11]), interval([0.50, 0.52, 0.49])
    assert low.exceeds_spread(high) and high.exceeds_spread(low)
    # the same means with a wide spread: the intervals overlap, nothing to call out
    wide_low, wide_high = interval([0.0, 0.4, -0.1]), interval([0.2, 0.9, 0.4])
    assert wide_low.high > wide_high.low
    assert not wide_low.exceeds_spread(wide_high) and not wide_high.exceeds_spread(wide_low)
    # one seed has no spread to compare with, however far apart the values
    assert not interval([100.0]).exceeds_spread(low) and not low.exceeds_spread(interval([100.0]))
    # touching ends count as overlap; zero spread on both sides with different values does not
    assert not Interval((1.0, 1.0)).exceeds_spread(Interval((1.0, 1.0)))
    assert Interval((1.0, 1.0)).exceeds_spread(Interval((2.0, 2.0)))


def _pair(**sections) -> AnalyzeResult:
    """A pair analysis holding only `sections` (the rest empty)."""
    drop = WorstDrop(NodeDrop("L1.H0", 5.0), NodeDrop("L0.H0", 5.0), 1.0)
    return AnalyzeResult("t", "s", "numerals", False, {}, 0, {}, [], {}, {}, {}, {}, drop, **sections)


def _record(name, depth, a, ld, worst=10.0, seed=None, severity=None):
    final = SimpleNamespace(alignment=SimpleNamespace(A=a), logit_diff={"student": ld, "teacher": 5.0},
                            worst_drop=WorstDrop(NodeDrop("L1.H0", 5.0), NodeDrop("L0.H0", worst), worst / 5.0))
    pair = _pair(sensitivity={"student": {"heads": {"severity": severity}}}) if severity is not None else None
    return StudentRecord(name=name, capacity={"depth": depth, "width": 1.0, "heads": 1.0}, parameters=None,
                         teacher_parameters=None, steps=[final], pair=pair, seed=seed, init="every_k")


def test_grouping_by_capacity_and_the_differences_named():
    records = [_record("d0.5-w1-h1-s0", 0.5, 0.60, 3.0, seed=0, severity=0.2),
               _record("d0.5-w1-h1-s1", 0.5, 0.62, 1.0, seed=1, severity=0.3),
               _record("d0.25-w1-h1-s0", 0.25, 0.30, 2.0, seed=0),
               _record("d0.25-w1-h1-s1", 0.25, 0.31, 2.2, seed=1),
               # another swept value (its hash in the name): not a replicate of the others
               _record("d0.25-w1-h1-s0-3fa2b1", 0.25, 0.9, 2.0, seed=0)]
    groups = group_by_capacity(records)
    assert [(g.label, g.n, g.seeds) for g in groups] == [
        ("d0.25-w1-h1", 2, [0, 1]), ("d0.25-w1-h1-3fa2b1", 1, [0]), ("d0.5-w1-h1", 2, [0, 1])]
    assert has_replicates(groups) and not has_replicates(group_by_capacity(records[:1] + records[2:3]))
    d025, _, d05 = groups
    assert d05.stats["A"].mean == pytest.approx(0.61)
    assert d05.stats["severity"].n == 2 and d025.stats["severity"].n == 0
    assert d05.stats["worst_ratio"].mean == pytest.approx(2.0)
    named = differences(groups)
    # A: 0.305 ± 0.064 against 0.61 ± 0.127 → named; LD: 2.1 ± 1.3 against 2.0 ± 12.7 → not;
    # the single-seed variant is never named
    assert [(d.metric, d.low.label, d.high.label) for d in named] == [("A", "d0.25-w1-h1", "d0.5-w1-h1")]
    assert named[0].text().startswith("A: d0.25-w1-h1 0.305 [")


def test_a_hand_picked_name_groups_by_capacity_and_circuit_size_is_read_at_t_020():
    from kdmech.report.replicates import circuit_nodes

    mine = _record("mine", 0.5, 0.7, 3.0, seed=7)
    groups = group_by_capacity([_record("d0.5-w1-h1-s0", 0.5, 0.6, 3.0, seed=0), mine])
    assert [(g.label, g.seeds) for g in groups] == [("d0.5-w1-h1", [0, 7])]
    assert circuit_nodes(mine) is None
    mine.circuit = {"threshold": 0.2, "student": {"nodes": ["L0.H0", "L0.MLP"]}}
    assert circuit_nodes(mine) == 2
    # no checkpoint circuit: the pair analysis' threshold sweep, at its reference threshold
    mine.circuit = None
    mine.pair = _pair(circuit={"student": {"reference_threshold": 0.2, "circuits": [
        {"threshold": 0.1, "nodes": ["a"]}, {"threshold": 0.2, "nodes": ["a", "b", "c"]}]}})
    assert circuit_nodes(mine) == 3


def test_seed_from_provenance_or_from_a_sweep_point_name():
    assert record_seed("anything", {"seed": 3}) == 3
    assert record_seed("d0.5-w1-h1-s2", {}) == 2  # folders written before provenance had the seed
    assert record_seed("d0.5-w1-h1-s2-ab12cd", {}) == 2
    assert record_seed("d0.5-w1-h1", {}) is None


@pytest.fixture(scope="module")
def sweep_folder(trained_teacher, tmp_path_factory):
    """Two capacities × two seeds, distilled for real and named as a sweep names its points."""
    from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
    from kdmech.models import CapacitySpec
    from kdmech.sweep import point_name

    teacher, _ = trained_teacher
    out = tmp_path_factory.mktemp("replicates_sweep")
    for depth in (0.25, 0.5):
        for seed in (0, 1):
            name = point_name({"capacity.depth": depth, "training.seed": seed})
            distill(str(teacher), out, CapacitySpec(depth=depth), name=name,
                    training=DistillTraining(steps=8, n_train=128, batch_size=8, seed=seed),
                    analysis=AnalysisSchedule(every_n_steps=8, per_type=32, min_prompts=8, circuits=False),
                    wandb="disabled", progress=False)
    return out


def test_report_over_a_sweep_shows_across_seed_intervals(sweep_folder):
    from kdmech.report.collect import collect
    from kdmech.report.html import write_report

    prov = json.loads((sweep_folder / "students" / "d0.5-w1-h1-s1" / "provenance.json").read_text())
    assert prov["seed"] == 1
    records = collect(sweep_folder)
    assert sorted((r.capacity["depth"], r.seed) for r in records) == [(0.25, 0), (0.25, 1), (0.5, 0), (0.5, 1)]
    page = write_report(sweep_folder).read_text()
    section = page[page.index('<h3 id="replicates">'):page.index('<h4 id="replicate-differences">')]
    rows = re.findall(r"<tr>(.*?)</tr>", section)[1:]
    assert len(rows) == 2  # one row per capacity
    for row, cap in zip(rows, ("d0.25-w1-h1", "d0.5-w1-h1")):
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[0] == cap and cells[5] == "2" and cells[6] == "0, 1"
        # A, worst drop, its ratio, LD: mean [low, high]; severity (no kdmech analyze) and circuit
        # size (circuits off to stay fast) were not computed
        values = dict(zip(["A", "worst", "ratio", "severity", "LD", "nodes"], cells[7:]))
        for key in ("A", "worst", "ratio", "LD"):
            assert re.fullmatch(r"-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]", values[key]), cells
        assert values["severity"] == values["nodes"] == "–"
    assert "exceeds the seed spread" in page
    png = sweep_folder / "report" / "capacity.png"
    assert png.stat().st_size > 10_000
    data = json.loads((sweep_folder / "report" / "replicates.json").read_text())
    assert [(c["capacity"], c["n"], c["A_n"]) for c in data["capacities"]] == [
        ("d0.25-w1-h1", 2, 2), ("d0.5-w1-h1", 2, 2)]
    assert all(c["A_low"] <= c["A_mean"] <= c["A_high"] for c in data["capacities"])


def test_report_with_one_seed_per_capacity_has_no_intervals(sweep_folder, tmp_path):
    import shutil

    from kdmech.report.html import write_report

    one = tmp_path / "one_seed"
    shutil.copytree(sweep_folder, one, ignore=shutil.ignore_patterns("*-s1", "report"))
    page = write_report(one).read_text()
    assert "One seed per capacity: no across-seed intervals" in page
    assert "Differences beyond the seed spread" not in page
    assert (one / "report" / "capacity.png").stat().st_size > 10_000
