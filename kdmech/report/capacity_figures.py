"""Figures comparing students across capacity ratios (for `kdmech report`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kdmech.report.collect import StudentRecord
from kdmech.report.replicates import CapacityGroup, group_by_capacity, has_replicates, metric_values


def _save(fig, path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def alignment_over_steps(records: list[StudentRecord], path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        ax.plot([s.step for s in r.steps], [s.alignment.A for s in r.steps], "o-", label=r.name)
    ax.set_xlabel("training step")
    ax.set_ylabel("alignment A")
    ax.set_title("alignment with the teacher during distillation")
    ax.legend(fontsize=8)
    _save(fig, path)


def versus_ratio(records: list[StudentRecord], path) -> None:
    """A, worst drop, severity, LD and circuit size against the parameter ratio: one point per
    student, or, when some capacity has two or more seeds, each capacity's mean across seeds
    with its 95% interval as error bars and the seeds as faint dots."""
    groups = group_by_capacity(records)
    if has_replicates(groups):
        _versus_ratio_replicates(groups, records, path)
        return
    x = np.array([r.param_ratio for r in records])
    sev = [r.pair.severity() if r.pair and r.pair.sensitivity else np.nan for r in records]
    fig, axes = _axes(not np.all(np.isnan(sev)))
    a = [r.final.alignment.A for r in records]
    ci = [r.pair.A_ci95 if r.pair else [v, v] for r, v in zip(records, a)]
    axes[0].errorbar(x, a, yerr=np.abs(np.array(ci).T - a), fmt="o-", capsize=3)
    axes[0].set_title("A (95% CI over prompts)")
    worst = [r.final.worst_drop.student.value for r in records]
    axes[1].plot(x, worst, "o-", label="student worst drop")
    axes[1].axhline(records[0].final.worst_drop.teacher.value, color="grey", ls="--", label="teacher")
    axes[1].set_title("worst single-node drop (%)")
    axes[1].legend(fontsize=7, loc="upper left")
    if len(axes) == 5:
        axes[4].plot(x, sev, "s-", color="tab:red", label="student")
        _severity_panel(axes[4])
    axes[2].plot(x, [r.final.logit_diff["student"] for r in records], "o-", label="student")
    axes[2].axhline(records[0].final.logit_diff["teacher"], color="grey", ls="--", label="teacher")
    axes[2].set_title("logit difference")
    axes[2].legend(fontsize=7)
    nodes = [len(r.circuit["student"]["nodes"]) if r.circuit and "student" in r.circuit else np.nan
             for r in records]
    edges = [len(r.circuit["student"]["edges"])
             if r.circuit and "student" in r.circuit and r.circuit["student"].get("edges_pruned", True)
             else np.nan for r in records]
    axes[3].plot(x, nodes, "o-", label="nodes")
    for xi, r in zip(x, records):  # an empty circuit is named, not drawn as a silent 0
        if r.circuit and "student" in r.circuit and not r.circuit["student"]["nodes"]:
            axes[3].annotate(f"no circuit\n({r.circuit['student']['completeness']:.0f}% with all ablated)",
                             (xi, 0), textcoords="offset points", xytext=(0, 8), ha="center",
                             fontsize=7, color="tab:red")
    if not np.all(np.isnan(edges)):  # post-LN (BERT) circuits have no pruned edges
        axes[3].plot(x, edges, "s-", label="edges")
    _teacher_nodes_line(axes[3], records)
    axes[3].set_title("circuit size (T = 0.20)")
    axes[3].legend(fontsize=7)
    _finish(fig, axes, path)


def _axes(severity: bool):
    """One panel per metric; severity's only where some student has it (no empty axes)."""
    n = 5 if severity else 4
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.8))
    return fig, list(axes)


def _severity_panel(ax) -> None:
    ax.set_title("severity (heads, kdmech analyze)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(fontsize=7)


def _finish(fig, axes, path) -> None:
    """Shared x labels, integer ticks on the circuit-size panel, saved."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("student / teacher parameters")
    axes[3].yaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = axes[3].get_ylim()
    axes[3].set_ylim(min(low, 0), high * 1.35)  # room for the legend above the lines
    fig.subplots_adjust(wspace=0.3)
    _save(fig, path)


def _seed_bars(ax, groups: list[CapacityGroup], metric: str, fmt="o-", color=None, label=None):
    """Means ± 95% interval across seeds (no bar for a single seed) and every seed as a dot."""
    x = np.array([g.param_ratio for g in groups])
    st = [g.stats[metric] for g in groups]
    mean = np.array([np.nan if s.mean is None else s.mean for s in st])
    err = np.array([0.0 if s.half_width is None else s.half_width for s in st])
    bars = ax.errorbar(x, mean, yerr=err, fmt=fmt, capsize=4, color=color, label=label)
    for g in groups:
        v = [metric_values(r)[metric] for r in g.records]
        v = [y for y in v if y is not None]
        ax.plot([g.param_ratio] * len(v), v, "o", mfc="none", alpha=0.6, color=bars[0].get_color(), ms=7)
    return bars


def _versus_ratio_replicates(groups: list[CapacityGroup], records: list[StudentRecord], path) -> None:
    fig, axes = _axes(any(g.stats["severity"].n for g in groups))
    _seed_bars(axes[0], groups, "A")
    axes[0].set_title("A (mean ± 95% CI across seeds)")
    _seed_bars(axes[1], groups, "worst_drop", label="student worst drop")
    axes[1].axhline(records[0].final.worst_drop.teacher.value, color="grey", ls="--", label="teacher")
    axes[1].set_title("worst single-node drop (%)")
    if len(axes) == 5:
        _seed_bars(axes[4], groups, "severity", fmt="s-", color="tab:red", label="student")
        _severity_panel(axes[4])
    axes[1].legend(fontsize=7, loc="upper left")
    _seed_bars(axes[2], groups, "ld", label="student")
    axes[2].axhline(records[0].final.logit_diff["teacher"], color="grey", ls="--", label="teacher")
    axes[2].set_title("logit difference")
    axes[2].legend(fontsize=7)
    _seed_bars(axes[3], groups, "circuit_nodes", label="student nodes")
    _teacher_nodes_line(axes[3], records)
    axes[3].set_title("circuit size (nodes, T = 0.20)")
    axes[3].legend(fontsize=7)
    seeds = sorted({g.n for g in groups})
    fig.suptitle(f"mean ± 95% t interval across seeds ({'/'.join(map(str, seeds))} seeds per capacity; "
                 f"rings: the seeds; no bar: one seed)", fontsize=9, y=1.02)
    _finish(fig, axes, path)


def noise_curves(records: list[StudentRecord], path) -> bool:
    with_noise = [r for r in records if r.pair and r.pair.noise]
    if not with_noise:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in with_noise:
        n = r.pair.noise
        sig = np.array(n["sigmas"])
        x = np.where(sig > 0, sig, sig[sig > 0].min() / 3)
        ax.plot(x, n["A_mean"], "o-", label=f"{r.name} (ρ {n['spearman_rho']:.2f}, plateau {n['plateau']:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("weight noise σ (σ = 0 at the left edge)")
    ax.set_ylabel("A(teacher, noisy student)")
    ax.set_title("validating A with noise")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _teacher_nodes_line(ax, records) -> None:
    """The teacher's circuit size as dashed lines, nodes and (where pruned) edges (its last
    circuit found in any record)."""
    t = next((r.circuit["teacher"] for r in records if r.circuit and "teacher" in r.circuit), None)
    if t:
        ax.axhline(len(t["nodes"]), color="grey", ls="--",
                   label="teacher nodes" if t["nodes"] else "teacher: no circuit")
        if t["nodes"] and t.get("edges_pruned", True) and t.get("edges"):
            ax.axhline(len(t["edges"]), color="tab:orange", ls="--", alpha=0.7, label="teacher edges")
