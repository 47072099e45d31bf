"""Influence heatmaps: layer × (heads, MLP), teacher beside student."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kdmech.analysis.nodes import Node


def influence_grid(influence: dict[str, float]) -> np.ndarray:
    """[layers, heads + 1] with the MLP in the last column."""
    nodes = [Node.parse(k) for k in influence]
    n_layers = max(n.layer for n in nodes) + 1
    n_heads = max((n.head for n in nodes if n.is_head), default=-1) + 1
    grid = np.full((n_layers, n_heads + 1), np.nan)
    for n in nodes:
        grid[n.layer, n.head if n.is_head else n_heads] = influence[n.name]
    return grid


def _layer_labels(n: int, copied: dict | None) -> list[str]:
    """L0, L1, ...; a student layer copied from the teacher also names its teacher layer."""
    copied = {int(k): int(v) for k, v in (copied or {}).items()}
    return [f"L{l}\n(teacher L{copied[l]})" if l in copied else f"L{l}" for l in range(n)]


def influence_figure(teacher: dict[str, float], student: dict[str, float], title: str = "",
                     layer_map: dict | None = None):
    """A matplotlib Figure; both panels share one colour scale so they compare directly; the
    student's layers copied from the teacher (`layer_map`: student → teacher layer) say which."""
    grids = [influence_grid(teacher), influence_grid(student)]
    vmax = max(np.nanmax(g) for g in grids) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8),
                             gridspec_kw={"width_ratios": [g.shape[1] for g in grids], "wspace": 0.3})
    for ax, grid, who in zip(axes, grids, ("teacher", "student")):
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        n_heads = grid.shape[1] - 1
        ax.set_xticks(range(n_heads + 1), [f"H{h}" for h in range(n_heads)] + ["MLP"])
        ax.set_yticks(range(grid.shape[0]), _layer_labels(grid.shape[0], layer_map if who == "student" else None),
                      fontsize=8 if layer_map and who == "student" else None)
        ax.set_title(f"{who}")
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 * vmax else "black")
    fig.colorbar(im, ax=axes, label="influence |Δ LD| %")
    fig.suptitle(title or "single-node mean-ablation influence")
    return fig


def save_influence_png(path, teacher, student, title: str = "", layer_map: dict | None = None) -> None:
    fig = influence_figure(teacher, student, title, layer_map)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
