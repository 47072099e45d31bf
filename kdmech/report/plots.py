"""PNG plots for `kdmech analyze`: circuits side by side, sensitivity, noise curve, shift."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kdmech.analysis.edges import Receiver
from kdmech.analysis.nodes import Node


def _save(fig, path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _xy(name: str, n_heads: int):
    """Where a node or an edge's receiver is drawn; None for the final residual (the logits).
    A KV group's shared k/v input (grouped-query attention) sits at the middle of its layer."""
    if name == "resid_final":
        return None
    if name.count(".") != 2:
        node = Node.parse(name)
    else:
        receiver = Receiver.parse(name)
        node = receiver.node
        if node is None:  # a KV group
            return (n_heads - 1) / 2, receiver.layer
    return (node.head if node.is_head else n_heads + 0.5), node.layer


def circuits_png(path, circuits: dict[str, dict], shapes: dict[str, tuple[int, int]],
                 matched: dict[str, str]) -> None:
    """Teacher and student circuits side by side. `circuits[who]` is a Circuit JSON,
    `shapes[who]` = (layers, heads); `matched` maps student node → teacher node. Teacher nodes
    that a student circuit node matches are ringed in orange, and student nodes carry the
    name of their teacher match."""
    fig, axes = plt.subplots(1, len(circuits), figsize=(6 * len(circuits), 5), squeeze=False)
    student_circuit = set(circuits.get("student", {}).get("nodes", []))
    matched_teacher = {matched[s] for s in student_circuit if s in matched}
    for ax, (who, c) in zip(axes[0], circuits.items()):
        n_layers, n_heads = shapes[who]
        for l in range(n_layers):
            for h in [*range(n_heads), None]:
                name = Node(l, h).name
                x, y = _xy(name, n_heads)
                inside = name in c["nodes"]
                ax.scatter(x, y, s=260 if inside else 60, marker="o" if h is not None else "s",
                           color="tab:blue" if inside else "lightgrey", zorder=3,
                           edgecolors="tab:orange" if who == "teacher" and name in matched_teacher else "none",
                           linewidths=3)
                if inside and who == "student" and name in matched:
                    ax.annotate(f"≈{matched[name]}", (x, y), textcoords="offset points",
                                xytext=(0, 9), ha="center", fontsize=7, color="tab:orange")
        for sender, receiver in c.get("edges", []):
            a = _xy(sender, n_heads)
            b = _xy(receiver, n_heads) or (n_heads / 2, n_layers - 0.3)
            ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:blue", alpha=0.35, lw=1, zorder=1)
        ax.text(n_heads / 2, n_layers - 0.3, "logits", ha="center", va="bottom", fontsize=8, color="tab:blue")
        ax.set_xticks([*range(n_heads), n_heads + 0.5], [f"H{h}" for h in range(n_heads)] + ["MLP"])
        ax.set_yticks(range(n_layers), [f"L{l}" for l in range(n_layers)])
        ax.set_ylim(-0.6, n_layers - 0.1)
        edge_text = (f"{len(c.get('edges', []))} edges" if c.get("edges_pruned", True)
                     else "edges not pruned")
        if not c["nodes"]:
            ax.set_title(f"{who}: no circuit: {c['completeness']:.0f}% of LD survives ablating every "
                         f"node (T={c['threshold']:.2f})", fontsize=9, color="tab:red")
        else:
            ax.set_title(f"{who}: {len(c['nodes'])} nodes, {edge_text} "
                         f"(T={c['threshold']:.2f}, completeness {c['completeness']:.0f}%)", fontsize=9)
    fig.suptitle("circuits (blue); orange: teacher nodes matched by the student's circuit")
    _save(fig, path)


def sensitivity_png(path, teacher: dict[str, float], student: dict[str, float]) -> None:
    """Distribution of single-node drops, heads and MLPs, teacher beside student."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, heads in zip(axes, (True, False)):
        data = [[v for k, v in d.items() if (".H" in k) == heads] for d in (teacher, student)]
        ax.boxplot(data, tick_labels=["teacher", "student"], showmeans=True)
        for i, vals in enumerate(data, 1):
            ax.scatter(np.full(len(vals), i) + np.random.default_rng(0).uniform(-0.12, 0.12, len(vals)),
                       vals, s=10, alpha=0.6)
        ax.set_title("heads" if heads else "MLPs")
        ax.set_ylabel("drop |Δ LD| % when ablated alone")
    fig.suptitle("ablation sensitivity")
    _save(fig, path)


def noise_png(path, noise: dict) -> None:
    sig = np.array(noise["sigmas"])
    A = np.array(noise["A"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    positive = sig[sig > 0]
    left = positive.min() / 3 if positive.size else 1e-3  # where σ = 0 is drawn
    x = np.where(sig > 0, sig, left)
    for j in range(A.shape[1]):
        ax.scatter(x, A[:, j], s=12, color="grey", alpha=0.6)
    ax.plot(x, A.mean(1), "o-", label="mean A")
    if positive.size:  # the fit needs some σ > 0
        grid = np.geomspace(positive.min(), sig.max(), 50)
        ax.plot(grid, noise["fit_a"] - noise["fit_b"] * np.log(grid), "--",
                label=f"a − b·ln σ (R² {noise['fit_r2']:.2f})")
    ax.axhline(noise["plateau"], color="tab:red", lw=0.8, label=f"plateau {noise['plateau']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("σ (σ = 0 drawn at the left edge)")
    ax.set_ylabel("A(teacher, noisy student)")
    ax.set_title(f"alignment under weight noise (Spearman ρ {noise['spearman_rho']:.2f})")
    ax.legend(fontsize=8)
    _save(fig, path)


def shift_png(path, rows: list[dict]) -> None:
    ok = [r for r in rows if not r["error"]]
    names = [r["shift"] for r in ok]
    x = np.arange(len(ok))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, key, label in zip(axes, ("top1", "logit_diff"), ("top-1 accuracy", "logit difference")):
        ax.bar(x - 0.2, [r["teacher"][key] for r in ok], 0.4, label="teacher")
        ax.bar(x + 0.2, [r["student"][key] for r in ok], 0.4, label="student")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(label)
    axes[0].legend()
    skipped = [r["shift"] for r in rows if r["error"]]
    fig.suptitle("distribution shift" + (f" (not run: {', '.join(skipped)})" if skipped else ""))
    _save(fig, path)
