"""`kdmech report DIR`: one self-contained HTML page (images embedded, no network) plus the
PNGs, comparing every student of a quickstart or sweep folder with its teacher."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from kdmech.report import capacity_figures as figs
from kdmech.report import plots
from kdmech.report.collect import StudentRecord, collect
from kdmech.report.heatmap import save_influence_png
from kdmech.report.inits import born_with, circuits_text, compare_inits
from kdmech.report.replicates import (FORMATS, LEVEL, METRICS, differences, group_by_capacity, has_replicates,
                                      to_rows)
from kdmech.report.timeline import picture_names, student_timeline
from kdmech.run_layout import REPORT_HTML, RunLayout

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
figure{margin:1em 0}figure img{display:block;max-width:100%;height:auto}
figcaption{color:#555;font-size:.9em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}.note{color:#666;font-size:.9em}
.banner{background:#fde2e1;border:2px solid #c0392b;color:#7b241c;padding:.8em 1em;font-weight:600}"""


def _weak_banner(records) -> str:
    """A visible warning when the teacher failed the competence gate and was analysed anyway."""
    weak = [r for r in records if r.final.teacher_weak]
    if not weak:
        return ""
    c = weak[0].final.teacher_competence
    return (f'<p class="banner" id="teacher-weak">teacher_weak: the teacher failed the competence gate '
            f'(top-1 {c.get("top1", float("nan")):.3f} on {html.escape(str(c.get("task", "?")))}, '
            f'{c.get("n_kept", "?")} of {c.get("n_prompts", "?")} prompts kept; needs top-1 ≥ '
            f'{c.get("min_top1", "?")} and ≥ {c.get("min_prompts", "?")} prompts) and was analysed '
            f'anyway (allow_weak_teacher): circuits, influence and A below describe a model that does '
            f'not do the task.</p>')


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _f(x, fmt=".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _circuit_cell(circ: dict | None) -> str:
    if not circ:
        return "–"
    if not circ["nodes"]:
        return f"no circuit ({circ['completeness']:.0f}% of LD with every node ablated)"
    return f"{len(circ['nodes'])}/{len(circ['edges']) if circ.get('edges_pruned', True) else '–'}"


def _summary_rows(records: list[StudentRecord]) -> list[list]:
    rows = []
    for r in records:
        f, c = r.final, r.capacity
        ci = r.pair.A_ci95 if r.pair else None
        sev = r.pair.severity() if r.pair else None
        circ = r.circuit["student"] if r.circuit and "student" in r.circuit else None
        rows.append([r.name, c.get("depth", "?"), c.get("width", "?"), c.get("heads", "?"),
                     f"{r.param_ratio:.2f}", _f(f.logit_diff["student"], ".2f"),
                     _f(f.alignment.A) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                     f"{f.worst_drop.student.value:.1f}% {f.worst_drop.student.node}",
                     f"{f.worst_drop.ratio:.2f}" + (" ⚑" if f.worst_drop.flag_2x else ""),
                     _f(sev), _circuit_cell(circ)])
    return rows


def _edges_note(records) -> str:
    notes = {r.circuit["student"].get("edges_note", "") for r in records if r.circuit and "student" in r.circuit}
    notes.discard("")
    return f" Circuit edges “–”: {html.escape(notes.pop())}." if notes else ""


def write_report(root: str | Path) -> Path:
    """report/report.html (and its pictures) over every student of the run folder `root`."""
    root = Path(root)
    records = collect(root)
    out = RunLayout(root).report
    out.mkdir(exist_ok=True)
    figs.alignment_over_steps(records, out / "alignment_over_steps.png")
    figs.versus_ratio(records, out / "capacity.png")
    groups = group_by_capacity(records)
    (out / "replicates.json").write_text(json.dumps(
        {"level": LEVEL, "capacities": to_rows(groups),
         "differences": [{"metric": d.metric, "lower": d.low.label, "higher": d.high.label}
                         for d in differences(groups)],
         "inits": [c.to_json() for c in compare_inits(groups)]}, indent=1))
    noise = figs.noise_curves(records, out / "noise.png")
    sections = [
        ("Summary", _summary_section(records)),
        ("Initialisation", _init_section(records)),
        ("Alignment over training", _img(out / "alignment_over_steps.png", "A over steps")),
        ("Capacity ratio", _img(out / "capacity.png", "metrics vs capacity ratio")),
        ("Influence: teacher beside each student", _influence_section(records, out)),
        ("Circuits side by side", _circuit_section(records, out)),
        ("Matching", _matching_section(records)),
        ("Noise validation", _img(out / "noise.png", "noise curves") if noise
         else "<p>No pair analysis with noise in this folder.</p>"),
        ("Distribution shift", _shift_table(records)),
        ("Restructuring", _restructuring(root, records)),
    ]
    body = "".join(f'<section id="{html.escape(t.lower().replace(" ", "-"))}"><h2>{html.escape(t)}</h2>{c}</section>'
                   for t, c in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>kdmech report: {html.escape(root.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>kdmech report: {html.escape(str(root))}</h1>"
            f"<p class='note'>{len(records)} students; generated {time.strftime('%Y-%m-%d %H:%M')}</p>"
            f"{_weak_banner(records)}{body}</body></html>")
    path = out / REPORT_HTML
    path.write_text(page)
    return path


def _summary_section(records: list[StudentRecord]) -> str:
    first = records[0].final
    return (_table(["student", "depth", "width", "heads", "params ratio", "LD", "A [95% CI]", "worst drop",
                    "ratio to teacher", "severity (heads)", "circuit nodes/edges"], _summary_rows(records))
            + f'<p class="note">Teacher LD {first.logit_diff["teacher"]:.2f}, worst drop '
              f'{first.worst_drop.teacher.value:.1f}% ({first.worst_drop.teacher.node}); '
              f'task {html.escape(first.task)}, {html.escape(first.ablation)} ablation. ⚑ = worst drop '
              f'over 2× the teacher\'s.' + _edges_note(records) + '</p>'
            + _replicates(records))


def _replicates(records: list[StudentRecord]) -> str:
    """Seeds as replicates: per capacity, n seeds and mean [95% CI] of every metric, and the
    differences between capacities that exceed the seed spread (kdmech.report.replicates)."""
    groups = group_by_capacity(records)
    head = '<h3 id="replicates">Replicates</h3>'
    if not has_replicates(groups):
        return (head + '<p class="note">One seed per capacity: no across-seed intervals (a sweep with '
                'several <code>training.seed</code> values per capacity gives them).</p>')
    rows = [[g.label, g.capacity.get("depth", "?"), g.capacity.get("width", "?"), g.capacity.get("heads", "?"),
             f"{g.param_ratio:.2f}", g.n, ", ".join("?" if s is None else str(s) for s in g.seeds)]
            + [g.stats[m].text(FORMATS[m]) for m in METRICS] for g in groups]
    table = _table(["capacity", "depth", "width", "heads", "params ratio", "n", "seeds"]
                   + list(METRICS.values()), rows)
    diffs = differences(groups)
    called = ("<ul>" + "".join(f"<li>{html.escape(d.text())}</li>" for d in diffs) + "</ul>" if diffs
              else "<p>No difference between capacities exceeds the seed spread.</p>")
    return (head + table
            + f'<p class="note">Each metric: mean [two-sided {LEVEL:.0%} Student t interval across seeds] '
              f'(mean ± t·s/√n, s with n − 1) of the final checkpoints; one seed: no interval. Severity only where '
              f'<code>kdmech analyze</code> ran; circuit nodes at T = 0.20. A difference is named below '
              f'only where it exceeds the seed spread: both capacities have ≥ 2 seeds and their '
              f'{LEVEL:.0%} intervals do not overlap.</p>'
            + '<h4 id="replicate-differences">Differences beyond the seed spread</h4>' + called)


def _birth_rows(records: list[StudentRecord]) -> list[list]:
    rows = []
    for r in records:
        imp = r.importance
        ranking = (f"{imp['metric']}: blocks by importance {imp['layer_ranking']} (scores "
                   f"{', '.join(f'{b:.3g}' for b in imp['blocks'])}) on {imp['data']}" if imp else "–")
        if imp and r.birth_round and r.birth_round[0] > 1:
            ranking += " — of the previous round's student, in its own layers"
        heads = "; ".join(f"L{i}←T{r.layer_map.get(i, '?')}.H{h}" for i, h in r.heads_kept.items()) or "–"
        rows.append([r.name, r.init or "?", f"{r.birth_round[0]} of {r.birth_round[1]}" if r.birth_round else "–",
                     f"{r.param_ratio:.4f}", str([int(t) for t in r.layer_map.values()]) if r.layer_map else "none",
                     heads, ranking])
    return rows


def _init_section(records: list[StudentRecord]) -> str:
    """Each student's birth (init, round, exact parameter ratio, teacher layers and heads kept,
    the importance ranking), and where a capacity has several inits their comparison across
    seeds (kdmech.report.inits)."""
    births = _table(["student", "init", "round", "params ratio", "teacher layers kept", "teacher heads kept",
                     "importance ranking"], _birth_rows(records))
    comparisons = compare_inits(group_by_capacity(records))
    if not comparisons:
        return births + '<p class="note">One init per capacity: no comparison of inits (a sweep over ' \
                        '<code>init</code> at one capacity gives it, e.g. sweeps/init.yaml).</p>'
    parts = [births]
    for c in comparisons:
        rows = [[g.init, g.n, ", ".join("?" if s is None else str(s) for s in g.seeds), *born_with(g)]
                + [g.stats[m].text(FORMATS[m]) for m in METRICS] + [circuits_text(g)] for g in c.groups]
        named = [f"{METRICS[d.metric]}: {d.low.init} {d.low.stats[d.metric].text(FORMATS[d.metric])} &lt; "
                 f"{d.high.init} {d.high.stats[d.metric].text(FORMATS[d.metric])}" for d in c.differences]
        named += [html.escape(ch.text()) for ch in c.circuits if ch.beyond_spread]
        within = [html.escape(ch.text()) for ch in c.circuits if not ch.beyond_spread]
        parts.append(f'<h3 id="inits-{html.escape(c.label)}">{html.escape(c.label)}: inits compared</h3>'
                     + _table(["init", "n", "seeds", "teacher layers kept", "teacher heads kept"]
                              + list(METRICS.values()) + ["circuits (teacher origin)"], rows)
                     + "<p>Where the init changes A, the worst drop or the circuit beyond the seed spread:</p>"
                     + ("<ul>" + "".join(f"<li>{x}</li>" for x in named) + "</ul>" if named else
                        "<p>nowhere: every difference between inits lies within the seed spread.</p>")
                     + ("<p class='note'>" + "<br>".join(within) + "</p>" if within else ""))
    return "".join(parts) + (
        f'<p class="note">Mean [two-sided {LEVEL:.0%} Student t interval across seeds]; a difference between inits '
        f'is named only where both have ≥ 2 seeds and their intervals do not overlap. Circuit agreement: Jaccard '
        f'index of the circuits\' node sets (T = 0.20), each node named by the teacher component it was '
        f'copied from (T&lt;layer&gt;.H&lt;head&gt;, T&lt;layer&gt;.MLP; its student name where nothing was '
        f'copied); an init changes the circuit beyond the seed '
        f'spread where its circuits agree less with the other init\'s than each init\'s seeds agree among '
        f'themselves. Heads: L&lt;student layer&gt;←T&lt;teacher layer&gt;.H[teacher heads].</p>')


def _influence_section(records: list[StudentRecord], out: Path) -> str:
    heat = []
    for r in records:
        p = out / f"influence_{r.name}.png"
        save_influence_png(p, r.final.influence["teacher"], r.final.influence["student"],
                           f"{r.name}: influence at step {r.final.step}", r.layer_map)
        heat.append(f"<h3>{html.escape(r.name)}</h3>" + _img(p, f"influence {r.name}"))
    return "".join(heat)


def _circuit_section(records: list[StudentRecord], out: Path) -> str:
    circ = []
    for r in records:
        if not (r.circuit and "student" in r.circuit):
            why = r.circuit.get("error", "not computed") if r.circuit else "not computed"
            circ.append(f"<p>{html.escape(r.name)}: no circuit ({html.escape(why)})</p>")
            continue
        p = out / f"circuits_{r.name}.png"
        shapes = {who: _shape(r.final.influence[who]) for who in ("teacher", "student")}
        matched = {m.student: m.teacher for m in r.final.matching}
        plots.circuits_png(p, {"teacher": r.circuit["teacher"], "student": r.circuit["student"]}, shapes, matched)
        circ.append(f"<h3>{html.escape(r.name)} (step {r.circuit['step']})</h3>" + _img(p, f"circuits {r.name}"))
    return "".join(circ)


def _matching_section(records: list[StudentRecord]) -> str:
    match = []
    for r in records:
        rows = [[m.student, f"{r.final.influence['student'][m.student]:.1f}", m.teacher,
                 f"{r.final.influence['teacher'][m.teacher]:.1f}", f"{m.similarity:.3f}"] for m in r.final.matching]
        shared = ", ".join(f"{t} → {', '.join(s)}" for t, s in r.final.merges.items() if not t.startswith("S:"))
        match.append(f"<h3>{html.escape(r.name)}</h3>" + _table(
            ["student node", "influence", "matched teacher node", "teacher influence", "similarity"], rows)
            + f'<p class="note">teacher nodes matched by several student nodes (teacher → student): '
              f'{html.escape(shared or "none")}</p>')
    return "".join(match)


def _shape(influence: dict[str, float]) -> tuple[int, int]:
    from kdmech.report.heatmap import influence_grid

    g = influence_grid(influence)
    return g.shape[0], g.shape[1] - 1


def _ld(x: float) -> str:
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def _shift_table(records: list[StudentRecord]) -> str:
    with_shift = [r for r in records if r.pair and r.pair.shift]
    if not with_shift:
        return "<p>No pair analysis with distribution shift in this folder.</p>"
    shifts = with_shift[0].pair.shift
    header = ["shift", "settings", "teacher top-1 / LD"] + [f"{r.name} top-1 / LD" for r in with_shift]
    cell = lambda d, err: f"{d['top1']:.2f} / {_ld(d['logit_diff'])}" if d else f"not run: {err[:60]}"  # noqa: E731
    rows, failed = [], []
    for i, t in enumerate(shifts):
        weak = bool(t["teacher"]) and t["teacher"]["top1"] < 0.5
        failed += [t["shift"]] if weak else []
        settings = ", ".join(f"{k}={v}" for k, v in t.get("settings", {}).items()) or "–"
        rows.append([t["shift"] + (" †" if weak else ""), settings, cell(t["teacher"], t["error"])]
                    + [cell(r.pair.shift[i]["student"], r.pair.shift[i]["error"]) for r in with_shift])
    note = (f'<p class="note">top-1 on the shifted prompts and the mean logit difference (correct − wrong '
            f'answer; an LD that rounds to zero is printed 0.00, without a sign). † {len(failed)} of '
            f'{len(shifts)} shifts: the teacher itself is below top-1 0.5 there ({html.escape(", ".join(failed))}); '
            f'the teacher never learned those forms, '
            f'so those rows show where the task ends for both models, not how the student differs.</p>'
            if failed else '<p class="note">top-1 on the shifted prompts and the mean logit difference.</p>')
    return _table(header, rows) + note


PICTURE_NOTES = {
    "influence_over_steps": "the student's influence per node and step; red boxes: in the circuit; "
                            "grey: no circuit was computed at that step",
    "matching_flow": "each active student node (left) to its best teacher match (right) at every checkpoint",
    "alignment_parts": "A and its head and MLP parts over training",
    "events": "restructuring events from their first step; a bar runs on while the event persists",
    "attribution_over_steps": "the student's estimated drop per node and step by gradient attribution "
                              "(−100·score / LD); red boxes: in the circuit",
}


def _restructuring(root: Path, records: list[StudentRecord]) -> str:
    """Per student, the timeline pictures at full width (built by the same code as `kdmech
    timeline`), each a link to its PNG at full size, then the event list."""
    from kdmech.wandb_restructuring import shown_kind

    layout = RunLayout(root)
    timelines, parts = {}, []
    for r in records:
        events = layout.events_json(r.name)
        t = timelines[r.name] = (json.loads(events.read_text()) if events.exists()
                                 else student_timeline(layout, r.name))
        pictures = "".join(
            f'<figure><a href="../timeline/{html.escape(r.name)}/{p}.png" title="open full size">'
            f'{_img(layout.timeline(r.name) / f"{p}.png", f"{p} {r.name}")}</a>'
            f'<figcaption>{html.escape(p.replace("_", " "))}: {html.escape(PICTURE_NOTES[p])} '
            f'(<a href="../timeline/{html.escape(r.name)}/{p}.png">full size</a>)</figcaption></figure>'
            for p in picture_names(layout, r.name))
        ev = [[e["first_step"], shown_kind(e), "yes" if e["persists"] else "no", e["detail"]] for e in t["events"]]
        parts.append(f'<h3 id="restructuring-{html.escape(r.name)}">{html.escape(r.name)}</h3>' + pictures
                     + (_table(["first step", "event", "persists", "what (teacher → student)"], ev)
                        if ev else "<p>no events</p>"))
    rules = next(iter(timelines.values()))["rules"]
    return ("".join(parts)
            + f'<p class="note">rules: {html.escape(json.dumps(rules))}; arrows read teacher → student (merge: '
              f'teacher nodes → one student node; split: one teacher node → student nodes); "inherited": an '
              f'emergence present at step 0, i.e. copied with the teacher\'s layers, not made by distillation; '
              f'teacher circuit and functions as in events.json; see kdmech.analysis.restructuring for the '
              f'definitions.</p>')
