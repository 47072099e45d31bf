"""Restructuring as W&B data: what a checkpoint record, a circuit record and a timeline's events
become in a W&B run, so W&B draws and filters them (lines per node, tables) instead of only
showing pictures. Pure functions from records to keys, rows and columns; `kdmech.tracking.WandbSink`
logs them.

Keys (`prefix` is "" for one student per run, "<student>/" when several share one):
  influence/<prefix>student/<node>, influence/<prefix>teacher/<node>   scalars, every checkpoint
  in_circuit/<prefix>student/<node>, in_circuit/<prefix>teacher/<node> 1 or 0 at circuit steps;
                                   absent (a gap in the line) where no circuit was computed
  analysis/<prefix>matching        table per checkpoint: MATCHING_COLUMNS
  analysis/<prefix>nodes           incremental table over the run: NODES_COLUMNS
  attribution/<prefix>student/<node> the student's estimated drop by attribution (%), at every
                                   checkpoint of a run that records attribution scores
  analysis/<prefix>attribution     incremental node × step table over such a run: ATTRIBUTION_COLUMNS
  timeline/<prefix>event_table     table at the end: EVENT_COLUMNS (timeline/<prefix>events is the picture)
"""

from __future__ import annotations

MATCHING_COLUMNS = ["step", "student_node", "matched_teacher_node", "similarity"]
NODES_COLUMNS = ["step", "student_node", "influence_student", "in_circuit", "matched_teacher_node",
                 "influence_teacher", "similarity"]
EVENT_COLUMNS = ["kind", "nodes", "first_step", "persists", "detail"]
ATTRIBUTION_COLUMNS = ["step", "student_node", "method", "score", "estimated_drop", "influence_student"]
NOT_COMPUTED = "not computed"
"""`in_circuit` of a node at a step where no circuit was computed (else yes or no)."""


def membership(node: str, circuit_nodes: list[str] | None) -> str:
    """yes, no, or not computed (no circuit at that step)."""
    if circuit_nodes is None:
        return NOT_COMPUTED
    return "yes" if node in circuit_nodes else "no"


def student_circuit(record) -> list[str] | None:
    """The student's circuit nodes of a checkpoint record, None where none was computed."""
    c = record.circuits
    return c.student.nodes if c is not None and not c.error else None


def influence_scalars(pair, prefix: str = "") -> dict:
    """influence/<prefix>student/<node> and influence/<prefix>teacher/<node> (in %)."""
    out = {}
    for who in ("student", "teacher"):
        out |= {f"influence/{prefix}{who}/{node}": value for node, value in pair.influence[who].items()}
    return out


def membership_scalars(circuits, nodes: dict[str, list[str]], prefix: str = "") -> dict:
    """in_circuit/<prefix><who>/<node>: 1 in the circuit, 0 not; nothing for a failed step."""
    if circuits is None or circuits.error:
        return {}
    out = {}
    for who, circuit in (("student", circuits.student), ("teacher", circuits.teacher)):
        members = set(circuit.nodes)
        out |= {f"in_circuit/{prefix}{who}/{node}": int(node in members) for node in nodes.get(who, [])}
    return out


def matching_rows(pair) -> list[list]:
    """One row per student node: its matched teacher node and their similarity."""
    return [[pair.step, m.student, m.teacher, m.similarity] for m in pair.matching]


def node_rows(record) -> list[list]:
    """NODES_COLUMNS rows of one checkpoint (in_circuit: yes/no/not computed)."""
    r = record.pair
    t_inf, s_inf, circuit = r.influence["teacher"], r.influence["student"], student_circuit(record)
    return [[r.step, m.student, s_inf[m.student], membership(m.student, circuit), m.teacher, t_inf[m.teacher],
             m.similarity] for m in r.matching]


def attribution_scalars(record, prefix: str = "") -> dict:
    """attribution/<prefix>student/<node>: the estimated drop (%) of a record's attribution
    scores (nothing when the record has none, or they failed)."""
    a = record.attribution
    if a is None or a.error:
        return {}
    return {f"attribution/{prefix}student/{node}": value for node, value in a.estimated_drop().items()}


def attribution_rows(record) -> list[list]:
    """ATTRIBUTION_COLUMNS rows of one checkpoint: each student node's score, estimated drop
    and exact influence."""
    a = record.attribution
    if a is None or a.error:
        return []
    influence, drops = record.pair.influence["student"], a.estimated_drop()
    return [[record.step, node, a.method, score, drops[node], influence.get(node, float("nan"))]
            for node, score in a.scores.items()]


def shown_kind(event: dict) -> str:
    """An event's kind as pictures, tables and W&B show it: an emergence that holds already at
    step 0 is `inherited` (the student starts from copied teacher layers; with a random init,
    present at initialisation), not something distillation made."""
    return "inherited" if event["kind"] == "emergence" and event["first_step"] == 0 else event["kind"]


def event_rows(events: list[dict], student: str | None = None) -> list[list]:
    """EVENT_COLUMNS rows of a timeline's events (events.json's dicts; kinds as `shown_kind`);
    with `student`, that column first (the report run holds every student's)."""
    rows = [[shown_kind(e), ", ".join(e["nodes"]), e["first_step"], e["persists"], e["detail"]] for e in events]
    return [[student, *row] for row in rows] if student is not None else rows
