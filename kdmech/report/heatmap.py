"""Influence heatmaps: layer × (heads, MLP), teacher beside student."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdmech.analysis.nodes import Node  # noqa: E402


def influence_grid(influence: dict[str, float]) -> np.ndarray:
    """[layers, heads + 1] with the MLP in the last column."""
    nodes = [Node.parse(k) for k in influence]
    n_layers = max(n.layer for n in nodes) + 1
    n_heads = max((n.head for n in nodes if n.is_head), default=-1) + 1
    grid = np.full((n_layers, n_heads + 1), np.nan)
    for n in nodes:
        grid[n.layer, n.head if n.is_head else n_heads] = influence[n.name]
    return grid


def influence_figure(teacher: dict[str, float], student: dict[str, float], title: str = ""):
    """A matplotlib Figure; both panels share one colour scale so they compare directly."""
    grids = [influence_grid(teacher), influence_grid(student)]
    vmax = max(np.nanmax(g) for g in grids) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8),
                             gridspec_kw={"width_ratios": [g.shape[1] for g in grids]})
    for ax, grid, who in zip(axes, grids, ("teacher", "student")):
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        n_heads = grid.shape[1] - 1
        ax.set_xticks(range(n_heads + 1), [f"H{h}" for h in range(n_heads)] + ["MLP"])
        ax.set_yticks(range(grid.shape[0]), [f"L{l}" for l in range(grid.shape[0])])
        ax.set_title(f"{who}")
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 * vmax else "black")
    fig.colorbar(im, ax=axes, label="influence |Δ LD| %")
    fig.suptitle(title or "single-node mean-ablation influence")
    return fig


def save_influence_png(path, teacher, student, title: str = "") -> None:
    fig = influence_figure(teacher, student, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
