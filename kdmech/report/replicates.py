"""Seeds as replicates: the students of a run folder grouped by capacity, with the spread across
training seeds of each metric the report shows.

Grouping. Students are replicates of one another when they share the capacity (depth, width,
heads ratios), the initialisation, and every other swept value — for a sweep point named by
`kdmech.sweep.point_name` (`d0.5-w1-h1[-<init>]-s1[-<hash of the point's other values>]`) that
is the name with its `-s<N>` seed token and its init token removed (the init is grouped on
from provenance.json); a name that does not start with the capacity's own name (a hand-picked
`--name`) is grouped by capacity and initialisation alone. When the students span several
inits, a group's label ends in its init (`d0.5-w1-h1 (importance)`); kdmech.report.inits
compares the inits of one capacity.

Statistics. Per group and metric, over the seeds that have the metric: n, the mean and the
two-sided 95% Student t interval, mean ± t(0.975, n − 1) · s / √n with s the sample standard
deviation (ddof = 1). One seed gives a mean and no interval (the seed spread is unknown).

Call-out rule. A difference between two capacities is called out only where it exceeds the
seed spread: both have an interval (n ≥ 2 each) and the two 95% intervals do not overlap
(touching ends count as overlapping). This is deliberately conservative — for two groups with
equal standard errors, non-overlapping 95% intervals correspond to p ≈ 0.006 rather than 0.05 —
so what is named is a difference the seeds do not explain; what is not named may still be real.

Metrics (the ones the summary table shows, read from the final checkpoint):
A; the student's worst single-node drop (%) and its ratio to the teacher's; severity of the
heads (pair analysis' sensitivity, when `kdmech analyze` ran); the student's logit difference;
the student's circuit size (nodes at the reference threshold T = 0.20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import stats

from kdmech.report.collect import StudentRecord

LEVEL = 0.95

METRICS: dict[str, str] = {
    "A": "A",
    "worst_drop": "worst drop (%)",
    "worst_ratio": "worst drop / teacher's",
    "severity": "severity (heads)",
    "ld": "LD",
    "circuit_nodes": "circuit nodes",
}
"""Metric key → label, in the order of the report's columns."""

FORMATS = {"A": ".3f", "worst_drop": ".1f", "worst_ratio": ".2f", "severity": ".3f", "ld": ".2f",
           "circuit_nodes": ".1f"}

REFERENCE_THRESHOLD = 0.20


def circuit_node_names(record: StudentRecord) -> list[str] | None:
    """The nodes of the student's circuit at the reference threshold: the last checkpoint
    circuit, else the pair analysis' threshold sweep; None when neither has one."""
    c = record.circuit
    if c and "student" in c and abs(c.get("threshold", REFERENCE_THRESHOLD) - REFERENCE_THRESHOLD) < 1e-9:
        return list(c["student"]["nodes"])
    ref = record.pair.reference_circuit("student") if record.pair and record.pair.circuit else None
    return list(ref["nodes"]) if ref else None


def circuit_nodes(record: StudentRecord) -> int | None:
    """The size of `circuit_node_names` (None without a circuit)."""
    nodes = circuit_node_names(record)
    return None if nodes is None else len(nodes)


def metric_values(record: StudentRecord) -> dict[str, float | None]:
    """The record's value of every metric in METRICS (None where it was not computed)."""
    f = record.final
    nodes = circuit_nodes(record)
    return {
        "A": f.alignment.A,
        "worst_drop": f.worst_drop.student.value,
        "worst_ratio": f.worst_drop.ratio,
        "severity": record.pair.severity() if record.pair else None,
        "ld": f.logit_diff["student"],
        "circuit_nodes": None if nodes is None else float(nodes),
    }


@dataclass(frozen=True)
class Interval:
    """Mean and Student t interval of the values of one metric across seeds."""

    values: tuple[float, ...]
    level: float = LEVEL

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof = 1); None below two values."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else None

    @property
    def half_width(self) -> float | None:
        """t((1 + level) / 2, n − 1) · s / √n; None below two values (no interval)."""
        if self.n < 2:
            return None
        return float(stats.t.ppf((1 + self.level) / 2, self.n - 1) * self.sd / math.sqrt(self.n))

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def exceeds_spread(self, other: "Interval") -> bool:
        """The call-out rule: both have an interval and the intervals do not overlap."""
        if self.half_width is None or other.half_width is None:
            return False
        return self.high < other.low or other.high < self.low

    def text(self, fmt: str = ".3f") -> str:
        """`mean [low, high]`; `mean (n=1, no interval)`; `–` without values."""
        if not self.values:
            return "–"
        if self.half_width is None:
            return f"{format(self.mean, fmt)} (1 seed, no interval)"
        return f"{format(self.mean, fmt)} [{format(self.low, fmt)}, {format(self.high, fmt)}]"


def interval(values, level: float = LEVEL) -> Interval:
    """The interval of `values`, leaving out None, NaN and ±inf (a metric a seed did not compute,
    or a ratio to a teacher drop of 0)."""
    kept = tuple(float(v) for v in values if v is not None and math.isfinite(float(v)))
    return Interval(kept, level)


def _capacity_name(c: dict) -> str:
    """`CapacitySpec.name` of a provenance capacity dict ("" without one)."""
    if not all(isinstance(c.get(k), (int, float)) for k in ("depth", "width", "heads")):
        return ""
    return f"d{c['depth']:g}-w{c['width']:g}-h{c['heads']:g}"


def _variant(record: StudentRecord) -> str:
    """What else than the seed tells two students of one capacity apart (see the module doc)."""
    cap_name = _capacity_name(record.capacity)
    if not cap_name:
        return record.name  # no provenance: a group of its own
    if not record.name.startswith(cap_name):
        return ""
    rest = [t for t in record.name[len(cap_name):].split("-") if t]
    return "-".join(t for t in rest if not (t[:1] == "s" and t[1:].isdigit()) and t != record.init)


@dataclass(frozen=True)
class CapacityGroup:
    """The students of one capacity (and variant) that differ only in seed."""

    capacity: dict
    variant: str
    init: str
    records: tuple[StudentRecord, ...]
    stats: dict[str, Interval] = field(default_factory=dict)
    show_init: bool = False
    """The label names the init (the students compared span several inits)."""

    @property
    def label(self) -> str:
        name = _capacity_name(self.capacity)
        if not name:
            return self.variant  # no provenance: the student's own name
        return name + (f"-{self.variant}" if self.variant else "") + (f" ({self.init})" if self.show_init else "")

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.records]

    @property
    def param_ratio(self) -> float:
        return float(np.mean([r.param_ratio for r in self.records]))


def group_by_capacity(records: list[StudentRecord], level: float = LEVEL) -> list[CapacityGroup]:
    """One group per capacity (and variant, initialisation), in order of parameter ratio, with
    the interval of every metric in METRICS across the group's seeds."""
    groups: dict[tuple, list[StudentRecord]] = {}
    for r in records:
        c = r.capacity
        key = (c.get("depth"), c.get("width"), c.get("heads"), _variant(r), r.init)
        groups.setdefault(key, []).append(r)
    out, several_inits = [], len({r.init for r in records}) > 1
    for (_, _, _, variant, init), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.name))
        values = [metric_values(r) for r in rs]
        out.append(CapacityGroup(rs[0].capacity, variant, init, tuple(rs),
                                 {m: interval([v[m] for v in values], level) for m in METRICS}, several_inits))
    return sorted(out, key=lambda g: (g.param_ratio, g.label))


def has_replicates(groups: list[CapacityGroup]) -> bool:
    """Some capacity has two or more seeds (the report then shows across-seed intervals)."""
    return any(g.n >= 2 for g in groups)


@dataclass(frozen=True)
class Difference:
    """A difference between two capacities in one metric that exceeds the seed spread."""

    metric: str
    low: CapacityGroup
    """The group with the smaller mean."""
    high: CapacityGroup

    def text(self) -> str:
        fmt = FORMATS[self.metric]
        lo, hi = self.low.stats[self.metric], self.high.stats[self.metric]
        return (f"{METRICS[self.metric]}: {self.low.label} {lo.text(fmt)} < "
                f"{self.high.label} {hi.text(fmt)}")


def differences(groups: list[CapacityGroup], metrics=tuple(METRICS)) -> list[Difference]:
    """Every pair of groups and metric whose intervals do not overlap (the call-out rule)."""
    out = []
    for m in metrics:
        for a, b in combinations(groups, 2):
            ia, ib = a.stats[m], b.stats[m]
            if ia.exceeds_spread(ib):
                out.append(Difference(m, *((a, b) if ia.mean < ib.mean else (b, a))))
    return out


def to_rows(groups: list[CapacityGroup]) -> list[dict]:
    """One flat dict per group (capacity, n, seeds, `<metric>_mean/_low/_high/_n`): the replicate
    table as data, e.g. for `report/replicates.json` or a `wandb.Table`."""
    rows = []
    for g in groups:
        row = {"capacity": g.label, **{k: g.capacity.get(k) for k in ("depth", "width", "heads")},
               "init": g.init, "param_ratio": g.param_ratio, "n": g.n, "seeds": g.seeds}
        for m, iv in g.stats.items():
            row |= {f"{m}_mean": iv.mean, f"{m}_low": iv.low, f"{m}_high": iv.high, f"{m}_n": iv.n}
        rows.append(row)
    return rows
