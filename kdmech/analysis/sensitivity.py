"""Ablation sensitivity, or brittleness (docs/method.md §6).

Per model, over all heads (and separately over MLPs), from single-node influence: drop
D_c = I_c; mean, median, mean of the worst 5% (k = ceil(0.05·n)), worst, Gini coefficient;
severity tail score S = (1/N)·Σ max(0, (min(L, m_i) − T)/(L − T))^α with
m_i = 100 − clamp(retained_i, 0, 100), L = 100, T = 20, α = 1; 95% bootstrap CIs (10,000
resamples, fixed seed) on the mean and on Δ = student − teacher; compression ratio
C = 1 − P_student/P_teacher and slope β = Δmean / C. A student whose worst single-node drop
exceeds 2× the teacher's is flagged.

`pooled_sensitivity` is the authors' form (their `robustness/plots/compute_robustness.py`),
reported under the `authors` preset: drops m = 100 − clamp(retained, 0, 100) (a node whose
ablation raises the metric drops 0, one that flips its sign drops 100), heads and MLPs in one
list; the mean's 95% CI from 10,000 resamples of that list (numpy `default_rng(42)`, one
`choice` with replacement per resample, percentiles 2.5/97.5); Δ = the mean over 10,000
resamples of mean(student resample) − mean(teacher resample) (one generator, seed 42, teacher
drawn first each time) with its percentile CI; severity on the pooled list; β = Δ / C and its
CI the Δ CI over C.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from kdmech.analysis.influence import Influence

SEVERITY_L, SEVERITY_T, SEVERITY_ALPHA = 100.0, 20.0, 1.0


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = all equal, → 1 = one holds everything)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def severity(retained: np.ndarray, L: float = SEVERITY_L, T: float = SEVERITY_T,
             alpha: float = SEVERITY_ALPHA) -> float:
    m = 100.0 - np.clip(retained, 0.0, 100.0)
    return float(np.mean(np.maximum(0.0, (np.minimum(L, m) - T) / (L - T)) ** alpha))


def bootstrap_mean_ci(x: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def bootstrap_diff_ci(student: np.ndarray, teacher: np.ndarray, n_boot: int = 10_000,
                      seed: int = 0) -> list[float]:
    """CI of mean(student) − mean(teacher), resampling each model's nodes independently."""
    rng = np.random.default_rng(seed)
    s, t = np.asarray(student, float), np.asarray(teacher, float)
    diffs = (s[rng.integers(0, s.size, (n_boot, s.size))].mean(1)
             - t[rng.integers(0, t.size, (n_boot, t.size))].mean(1))
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


@dataclass(frozen=True)
class DropStats:
    n: int
    mean: float
    median: float
    worst_5pct_mean: float
    worst: float
    worst_node: str
    gini: float
    severity: float
    mean_ci95: list[float]

    def to_json(self) -> dict:
        return asdict(self)


def drop_stats(infl: Influence, heads: bool, n_boot: int = 10_000, seed: int = 0) -> DropStats:
    names = [k for k in infl.influence if (".H" in k) == heads]
    d = np.array([infl.influence[k] for k in names])
    r = np.array([infl.retained[k] for k in names])
    k = math.ceil(0.05 * d.size)
    order = np.argsort(-d)
    return DropStats(n=int(d.size), mean=float(d.mean()), median=float(np.median(d)),
                     worst_5pct_mean=float(d[order[:k]].mean()), worst=float(d[order[0]]),
                     worst_node=names[int(order[0])], gini=gini(d), severity=severity(r),
                     mean_ci95=bootstrap_mean_ci(d, n_boot, seed))


@dataclass(frozen=True)
class Sensitivity:
    teacher: dict[str, DropStats]
    """"heads" and "mlps"."""
    student: dict[str, DropStats]
    delta_mean: dict[str, float]
    delta_mean_ci95: dict[str, list[float]]
    compression: float
    """C = 1 − P_student / P_teacher."""
    slope: dict[str, float]
    """β = Δmean / C."""
    worst_ratio: float
    """Student's worst single-node drop over the teacher's (heads and MLPs pooled)."""
    brittle: bool
    """True when that ratio exceeds 2."""
    severity_params: dict[str, float]
    convention: str = "kdmech"
    """kdmech, or authors when `pooled` holds the authors' pooled form as well."""
    pooled: dict | None = None
    """`PooledSensitivity.to_json()` under the authors preset."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Sensitivity":
        stats = lambda g: {k: DropStats(**v) for k, v in g.items()}  # noqa: E731
        return cls(**{**d, "teacher": stats(d["teacher"]), "student": stats(d["student"])})


def sensitivity(teacher: Influence, student: Influence, teacher_params: int,
                student_params: int, n_boot: int = 10_000, seed: int = 0) -> Sensitivity:
    groups = {"heads": True, "mlps": False}
    t = {g: drop_stats(teacher, h, n_boot, seed) for g, h in groups.items()}
    s = {g: drop_stats(student, h, n_boot, seed) for g, h in groups.items()}
    compression = 1 - student_params / teacher_params
    delta = {g: s[g].mean - t[g].mean for g in groups}
    ci = {}
    for g, h in groups.items():
        pick = lambda infl, h=h: [v for k, v in infl.influence.items() if (".H" in k) == h]  # noqa: E731
        ci[g] = bootstrap_diff_ci(pick(student), pick(teacher), n_boot, seed)
    worst_t, worst_s = teacher.worst[1], student.worst[1]
    ratio = worst_s / worst_t if worst_t > 0 else float("inf")
    return Sensitivity(t, s, delta, ci, compression,
                       {g: (delta[g] / compression if compression else float("nan")) for g in groups},
                       ratio, bool(ratio > 2.0),
                       {"L": SEVERITY_L, "T": SEVERITY_T, "alpha": SEVERITY_ALPHA})


AUTHORS_N_BOOT, AUTHORS_SEED = 10_000, 42


def clamped_drops(infl: Influence) -> tuple[list[str], np.ndarray]:
    """Node names and m = 100 − clamp(retained, 0, 100), heads and MLPs in one list."""
    names = list(infl.retained)
    return names, 100.0 - np.clip(np.array([infl.retained[k] for k in names], dtype=float), 0.0, 100.0)


def authors_mean_ci(x: np.ndarray, n_boot: int = AUTHORS_N_BOOT, seed: int = AUTHORS_SEED) -> list[float]:
    """95% percentile CI of the mean, resampling as the authors do (one draw per resample)."""
    rng = np.random.default_rng(seed)
    means = [rng.choice(x, size=x.size, replace=True).mean() for _ in range(n_boot)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def authors_diff(teacher: np.ndarray, student: np.ndarray, n_boot: int = AUTHORS_N_BOOT,
                 seed: int = AUTHORS_SEED) -> tuple[float, list[float]]:
    """(mean of the bootstrap differences, its 95% percentile CI) of mean(student) − mean(teacher),
    one generator drawing the teacher's resample then the student's each time."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        t = rng.choice(teacher, size=teacher.size, replace=True).mean()
        diffs.append(rng.choice(student, size=student.size, replace=True).mean() - t)
    return float(np.mean(diffs)), [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


@dataclass(frozen=True)
class PooledStats:
    n: int
    mean: float
    mean_ci95: list[float]
    median: float
    worst: float
    worst_node: str
    severity: float


@dataclass(frozen=True)
class PooledSensitivity:
    teacher: PooledStats
    student: PooledStats
    delta_mean: float
    """Mean of the bootstrap differences (what the authors report as Δ)."""
    delta_mean_ci95: list[float]
    compression: float
    slope: float
    slope_ci95: list[float]
    n_boot: int
    seed: int
    drops: str = "100 - clamp(retained, 0, 100), heads and MLPs pooled"

    def to_json(self) -> dict:
        return asdict(self)


def pooled_stats(infl: Influence, n_boot: int = AUTHORS_N_BOOT, seed: int = AUTHORS_SEED) -> PooledStats:
    names, m = clamped_drops(infl)
    worst = int(np.argmax(m))
    return PooledStats(n=int(m.size), mean=float(m.mean()), mean_ci95=authors_mean_ci(m, n_boot, seed),
                       median=float(np.median(m)), worst=float(m[worst]), worst_node=names[worst],
                       severity=severity(100.0 - m))


def pooled_sensitivity(teacher: Influence, student: Influence, teacher_params: int,
                       student_params: int, n_boot: int = AUTHORS_N_BOOT,
                       seed: int = AUTHORS_SEED) -> PooledSensitivity:
    """The authors' sensitivity (module docstring) of a teacher–student pair."""
    delta, ci = authors_diff(clamped_drops(teacher)[1], clamped_drops(student)[1], n_boot, seed)
    c = 1 - student_params / teacher_params
    slope = lambda v: v / c if c > 0 else float("nan")  # noqa: E731
    return PooledSensitivity(pooled_stats(teacher, n_boot, seed), pooled_stats(student, n_boot, seed),
                             delta, ci, c, slope(delta), [slope(ci[0]), slope(ci[1])], n_boot, seed)
