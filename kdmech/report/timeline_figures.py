"""Pictures of restructuring over training (for `kdmech timeline` and the report)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from kdmech.analysis.nodes import Node
from kdmech.analysis.restructuring import Event, RunHistory
from kdmech.wandb_restructuring import shown_kind


def _save(fig, path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def influence_over_steps(h: RunHistory, path) -> None:
    """Step × node heatmap of the student's influence; circuit members outlined in red."""
    steps = [s["step"] for s in h.steps]
    nodes = sorted({r["node"] for r in h.rows}, key=Node.parse)
    grid = np.full((len(nodes), len(steps)), np.nan)
    member = np.zeros_like(grid, dtype=bool)
    computed = np.zeros(len(steps), dtype=bool)
    for r in h.rows:
        i, j = nodes.index(r["node"]), steps.index(r["step"])
        grid[i, j] = r["influence"]
        member[i, j] = bool(r["in_circuit"])
        computed[j] |= r["in_circuit"] is not None
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(steps) + 2), max(3, 0.28 * len(nodes) + 1)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    for i, j in zip(*np.nonzero(member)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    for j in np.nonzero(~computed)[0]:  # no circuit at this step: membership unknown, not "out"
        ax.add_patch(Rectangle((j - 0.5, -0.5), 1, len(nodes), fc="lightgrey", alpha=0.55, hatch="//", ec="grey"))
    ax.set_xticks(range(len(steps)), [f"{s}" if c else f"{s}\nno circuit" for s, c in zip(steps, computed)])
    ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(f"{h.name}: student influence\n(red: in the circuit; grey: no circuit computed at that step)",
                 fontsize=10)
    fig.colorbar(im, ax=ax, label="influence %")
    _save(fig, path)


def attribution_over_steps(h: RunHistory, path) -> bool:
    """Step × node heatmap of the student's estimated drop by attribution (−100·s / LD_full,
    `attribution.watch`), circuit members outlined in red; False (nothing drawn) when the run
    recorded no attribution scores."""
    rows = [r for r in h.rows if "attribution_drop" in r and r["attribution_drop"] not in ("", None)]
    if not rows:
        return False
    steps = sorted({int(r["step"]) for r in rows})
    nodes = sorted({r["node"] for r in rows}, key=Node.parse)
    grid = np.full((len(nodes), len(steps)), np.nan)
    member = np.zeros_like(grid, dtype=bool)
    for r in rows:
        i, j = nodes.index(r["node"]), steps.index(int(r["step"]))
        grid[i, j] = float(r["attribution_drop"])
        member[i, j] = r["in_circuit"] in (True, "True")
    bound = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1e-9)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(steps) + 2), max(3, 0.28 * len(nodes) + 1)))
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    for i, j in zip(*np.nonzero(member)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(f"{h.name}: estimated drop by attribution (% of LD; red box: in the circuit)", fontsize=10)
    fig.colorbar(im, ax=ax, label="−100·score / LD_full")
    _save(fig, path)
    return True


def matching_flow(h: RunHistory, path, min_influence: float = 5.0) -> None:
    """One column per checkpoint: active student nodes (left) to their teacher matches
    (right); line width = similarity; teacher circuit nodes in red."""
    cps = h.checkpoints
    students = sorted({s for cp in cps for s, v in cp.student_influence.items() if v >= min_influence},
                      key=Node.parse)
    teachers = sorted({t for cp in cps for s, (t, _) in cp.student_to_teacher.items() if s in students}
                      | set(h.teacher_circuit), key=Node.parse)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(cps)), max(3, 0.35 * max(len(students), len(teachers)) + 1)))
    ys = lambda names, n: dict(zip(names, np.linspace(0, 1, max(n, 2))[:n]))  # noqa: E731
    y_s, y_t = ys(students, len(students)), ys(teachers, len(teachers))
    for c, cp in enumerate(cps):
        for s in students:
            if cp.student_influence.get(s, 0) < min_influence:
                continue
            t, sim = cp.student_to_teacher.get(s, (None, 0))
            if t in y_t:
                ax.plot([c, c + 0.6], [y_s[s], y_t[t]], color="tab:blue", lw=0.5 + 4 * max(sim, 0), alpha=0.6)
        ax.scatter([c] * len(students), [y_s[s] for s in students], s=12, color="k")
        ax.scatter([c + 0.6] * len(teachers), [y_t[t] for t in teachers], s=12,
                   color=["red" if t in h.teacher_circuit else "grey" for t in teachers])
        ax.text(c + 0.3, 1.06, f"step {cp.step}", ha="center", fontsize=8)
    for s in students:
        ax.text(-0.08, y_s[s], s, ha="right", va="center", fontsize=7)
    for t in teachers:
        ax.text(len(cps) - 0.4 + 0.08, y_t[t], t, ha="left", va="center", fontsize=7,
                color="red" if t in h.teacher_circuit else "grey")
    ax.set_xlim(-0.8, len(cps) + 0.3)
    ax.set_ylim(-0.08, 1.12)
    ax.axis("off")
    ax.set_title(f"{h.name}: each active student node (left) → its matched teacher node (right), per checkpoint\n"
                 f"(line width = similarity; red: teacher circuit nodes)", pad=18, fontsize=10)
    _save(fig, path)


def alignment_parts(h: RunHistory, path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [s["step"] for s in h.steps]
    for key in ("A", "A_heads", "A_mlp"):
        ax.plot(steps, [s[key] for s in h.steps], "o-", label=key)
    ax.set_xlabel("step")
    ax.set_title(f"{h.name}: alignment and its parts")
    ax.legend(fontsize=8)
    _save(fig, path)


def event_timeline(h: RunHistory, events: list[Event], path) -> None:
    last = max(s["step"] for s in h.steps)
    fig, ax = plt.subplots(figsize=(7, max(2, 0.35 * len(events) + 1)))
    colours = {"merge": "tab:purple", "split": "tab:orange", "discard": "tab:red",
               "emergence": "tab:green", "concentration": "k"}
    colours["inherited"] = "tab:olive"
    for i, e in enumerate(events):
        kind = shown_kind(e.to_json())
        ax.plot([e.first_step, last if e.persists else e.first_step], [i, i], color=colours[kind], lw=3)
        ax.scatter([e.first_step], [i], color=colours[kind], zorder=3)
        ax.text(e.first_step, i + 0.25, f"{kind}: {e.detail}", fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-0.05 * max(last, 1), last * 1.05 + 1)
    ax.set_ylim(-0.8, len(events) + 0.2)
    ax.set_xlabel("step (a bar runs to the end when the event persists; arrows read teacher → student)")
    ax.set_title(f"{h.name}: restructuring events" + ("" if events else " (none)"))
    _save(fig, path)
