"""Restructuring during distillation: a per-run history and the events found in it.

History: every checkpoint's analysis in one long table (a row per step and student node:
influence, circuit membership, matched teacher node, similarity, the node's attribution score
and estimated drop when the run records them, and the step's A parts).

Events, each stamped with the first checkpoint at which it holds and whether it holds at every
later checkpoint (`persists`). "Teacher circuit nodes" are the teacher's T = 0.20 circuit. A
student node is *active* when its influence is ≥ `min_influence` (%).

- merge: ≥ 2 teacher circuit nodes whose best student match (teacher → student argmax over
  the similarity matrix) is the same active student node, each with similarity ≥ `min_similarity`.
- split: ≥ 2 active student nodes whose best teacher match (student → teacher) is the same
  teacher circuit node, each with similarity ≥ `min_similarity`.
- discard: a teacher circuit node that no active student node matches (student → teacher) with
  similarity ≥ `min_similarity`.
- emergence: a teacher function — the teacher's best successor head and best similar-member
  head (the probes; only if its score is ≥ `min_probe`) — gets an active student node matched
  to it with similarity ≥ `min_similarity`.

Every similarity tops out at 1 — for identical nodes (head pattern cosine, svd3, cka) or, with
the authors' MLP score, for the best pair — so one `min_similarity` serves heads and MLPs.
- concentration: the student's worst single-node drop exceeds `concentration_ratio` × the
  teacher's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdmech.analysis.record import CheckpointRecord, CircuitRecord, last_circuits
from kdmech.errors import KdmechError
from kdmech.run_layout import RunLayout


@dataclass(frozen=True)
class Rules:
    min_similarity: float = 0.5
    """For heads and MLPs alike: every similarity tops out at 1 (identical nodes; for the
    authors' MLP score, the best pair)."""
    min_influence: float = 5.0
    min_probe: float = 0.5
    concentration_ratio: float = 2.0


@dataclass(frozen=True)
class Checkpoint:
    """What the event rules read at one step."""

    step: int
    student_influence: dict[str, float]
    student_to_teacher: dict[str, tuple[str, float]]
    teacher_to_student: dict[str, tuple[str, float]]
    worst_ratio: float
    student_circuit: list[str] | None = None
    mlp_method: str = "svd3"


@dataclass(frozen=True)
class Event:
    kind: str
    nodes: list[str]
    """Student nodes first for merge/emergence, teacher nodes for discard/split (see `detail`)."""
    first_step: int
    persists: bool
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _holds(cp: Checkpoint, teacher_circuit: list[str], functions: dict[str, str], rules: Rules) -> dict:
    """Every event key that holds at this checkpoint → (nodes, detail)."""
    active = {n for n, v in cp.student_influence.items() if v >= rules.min_influence}
    out = {}
    by_student: dict[str, list[str]] = {}
    ok = lambda node, sim: sim >= rules.min_similarity  # noqa: E731
    for t in teacher_circuit:
        s, sim = cp.teacher_to_student.get(t, (None, 0.0))
        if s in active and ok(t, sim):
            by_student.setdefault(s, []).append(t)
    for s, ts in by_student.items():
        if len(ts) >= 2:
            out[("merge", s, tuple(sorted(ts)))] = ([s, *sorted(ts)], f"{', '.join(sorted(ts))} → {s}")
    by_teacher: dict[str, list[str]] = {}
    for s in active:
        t, sim = cp.student_to_teacher.get(s, (None, 0.0))
        if t in teacher_circuit and ok(t, sim):
            by_teacher.setdefault(t, []).append(s)
    for t, ss in by_teacher.items():
        if len(ss) >= 2:
            out[("split", t, tuple(sorted(ss)))] = ([t, *sorted(ss)], f"{t} → {', '.join(sorted(ss))}")
    for t in teacher_circuit:
        if t not in by_teacher:
            out[("discard", t)] = ([t], f"no active student node matches {t}")
    for function, t in functions.items():
        ss = sorted(s for s in active if cp.student_to_teacher.get(s, (None, 0))[0] == t
                    and ok(t, cp.student_to_teacher[s][1]))
        if ss:
            out[("emergence", function, t)] = ([*ss, t], f"{function} head {t} ↔ student {', '.join(ss)}")
    if cp.worst_ratio > rules.concentration_ratio:
        out[("concentration",)] = ([], f"worst drop {cp.worst_ratio:.2f}× the teacher's")
    return out


def find_events(history: list[Checkpoint], teacher_circuit: list[str], functions: dict[str, str],
                rules: Rules = Rules()) -> list[Event]:
    """Events in step order (see module docstring for the rules)."""
    history = sorted(history, key=lambda c: c.step)
    held = [_holds(cp, teacher_circuit, functions, rules) for cp in history]
    first: dict = {}
    for cp, keys in zip(history, held):
        for key, (nodes, detail) in keys.items():
            first.setdefault(key, (cp.step, nodes, detail))
    events = []
    for key, (step, nodes, detail) in first.items():
        later = [k for cp, k in zip(history, held) if cp.step >= step]
        events.append(Event(key[0], nodes, step, all(key in k for k in later), detail))
    order = {"merge": 0, "split": 1, "discard": 2, "emergence": 3, "concentration": 4}
    return sorted(events, key=lambda e: (e.first_step, order[e.kind], e.nodes))


# --- reading a run's records ------------------------------------------------------------
def _best_matches(sim: dict, student_to_teacher: bool) -> dict[str, tuple[str, float]]:
    """Each node's most similar node on the other side: student → teacher reads the rows of
    the [student × teacher] matrix, teacher → student its columns."""
    rows, cols, m = sim["student"], sim["teacher"], sim["matrix"]
    if not student_to_teacher:
        rows, cols, m = cols, rows, [list(c) for c in zip(*m)]
    return {r: max(zip(cols, row), key=lambda x: x[1]) for r, row in zip(rows, m)}


@dataclass
class RunHistory:
    name: str
    checkpoints: list[Checkpoint]
    rows: list[dict]
    """The long table: one row per step and student node."""
    steps: list[dict]
    """One row per step: A, A_heads, A_mlp, worst-drop ratio, LDs."""
    teacher_circuit: list[str] = field(default_factory=list)
    functions: dict[str, str] = field(default_factory=dict)


def _teacher_functions(circuits: CircuitRecord, rules: Rules) -> dict[str, str]:
    """The teacher's best successor and similar-member heads, where the probe clears `min_probe`."""
    functions = {}
    probes = circuits.probes.get("teacher", {})
    for function, key in (("successor", "successor"), ("similar-member", "similar_member")):
        scores = probes.get(key, {})
        if scores and "error" not in scores:
            best = max(scores, key=scores.get)
            if scores[best] >= rules.min_probe:
                functions[function] = best
    return functions


def checkpoint_rows(record: CheckpointRecord) -> tuple[Checkpoint, list[dict], dict]:
    """What one record adds to a history: the event rules' view, the long rows, the step row."""
    r = record.pair
    sim = r.similarity
    s2t = {m.student: (m.teacher, m.similarity) for m in r.matching}
    t2s = {**_best_matches(sim["heads"], False), **_best_matches(sim["mlps"], False)} if sim else {}
    s2t_best = {**_best_matches(sim["heads"], True), **_best_matches(sim["mlps"], True)} if sim else s2t
    c = record.circuits
    circuit = c.student.nodes if c is not None and not c.error else None
    infl = r.influence["student"]
    checkpoint = Checkpoint(r.step, infl, s2t_best, t2s, r.worst_drop.ratio, circuit,
                            r.options.get("mlp_similarity", "svd3"))
    a = r.alignment
    step = {"step": r.step, "A": a.A, "A_heads": a.A_heads, "A_mlp": a.A_mlp,
            "worst_drop_ratio": r.worst_drop.ratio,
            "ld_student": r.logit_diff["student"], "ld_teacher": r.logit_diff["teacher"]}
    rows = []
    attribution = record.attribution
    drops = attribution.estimated_drop() if attribution is not None else {}
    for node, value in infl.items():
        teacher, similarity = s2t.get(node, ("", float("nan")))
        row = {"step": r.step, "node": node, "influence": value,
               "in_circuit": (node in circuit) if circuit is not None else None,
               "matched_teacher_node": teacher, "similarity": similarity,
               "teacher_influence": r.influence["teacher"].get(teacher, float("nan"))}
        if attribution is not None:  # columns only in runs that record attribution scores
            row |= {"attribution": attribution.scores.get(node, float("nan")),
                    "attribution_drop": drops.get(node, float("nan"))}
        rows.append(row)
    return checkpoint, rows, step


def build_history(name: str, records: list[CheckpointRecord], rules: Rules = Rules()) -> RunHistory:
    """A student's history from its records (step order); the teacher circuit and functions
    come from the latest circuit record."""
    if not records:
        raise KdmechError(f"student {name!r} has no analysed checkpoints (step_<N>.json)")
    checkpoints, rows, steps = [], [], []
    for record in sorted(records, key=lambda r: r.step):
        cp, r, s = checkpoint_rows(record)
        checkpoints.append(cp)
        rows += r
        steps.append(s)
    circuits = last_circuits([r for r in records if r.circuits is None or not r.circuits.error])
    teacher_circuit = circuits.teacher.nodes if circuits else []
    functions = _teacher_functions(circuits, rules) if circuits else {}
    return RunHistory(name, checkpoints, rows, steps, teacher_circuit, functions)


def load_history(layout: RunLayout, name: str, rules: Rules = Rules()) -> RunHistory:
    return build_history(name, CheckpointRecord.load_all(layout, name), rules)


def _write_csv(path: Path, rows: list[dict], append: bool) -> None:
    import csv

    new = not (append and path.exists())
    if new:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    else:  # appended rows keep the file's columns (a run's steps all record the same ones)
        with open(path, newline="") as fh:
            fields = next(csv.reader(fh))
    with open(path, "w" if new else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def append_history(layout: RunLayout, name: str, record: CheckpointRecord) -> None:
    """Add one checkpoint to history.csv and steps.csv (one row per step and node; one per
    step): the history grows with each checkpoint instead of being rebuilt."""
    _, rows, step = checkpoint_rows(record)
    _write_csv(layout.history_csv(name), rows, append=True)
    _write_csv(layout.steps_csv(name), [step], append=True)


def write_history(layout: RunLayout, name: str, history: RunHistory | None = None) -> Path:
    """history.csv (long format, loads straight into pandas) and steps.csv beside the JSONs,
    written whole (e.g. once circuits of the last step are known)."""
    h = history or load_history(layout, name)
    _write_csv(layout.history_csv(name), h.rows, append=False)
    _write_csv(layout.steps_csv(name), h.steps, append=False)
    return layout.history_csv(name)
