"""Restructuring events on a synthetic history whose events are known in advance."""

from kdmech.analysis.restructuring import Checkpoint, Rules, find_events

TEACHER_CIRCUIT = ["L0.H1", "L1.H0", "L2.MLP", "L3.MLP"]
FUNCTIONS = {"successor": "L1.H0"}


def cp(step, influence, s2t, t2s, ratio=1.0):
    return Checkpoint(step, influence, s2t, t2s, ratio, mlp_method="cka")


def synthetic():
    """step 0: the student copies the teacher loosely; L1.H0 (successor) has no counterpart.
    step 100: student L0.MLP absorbs teacher L2.MLP and L3.MLP (a merge, kept to the end);
              student L0.H2 now matches L1.H0 with enough influence (emergence).
    step 200: teacher L0.H1 loses its counterpart (discard, kept); the student's worst drop
              passes 2× the teacher's (concentration, gone again at step 300).
    step 300: as step 200 without the concentration."""
    base_inf = {"L0.H0": 20.0, "L0.H1": 1.0, "L0.H2": 2.0, "L0.MLP": 30.0}
    h = [cp(0, base_inf,
            {"L0.H0": ("L0.H1", 0.9), "L0.H2": ("L1.H0", 0.3), "L0.MLP": ("L2.MLP", 0.8), "L0.H1": ("L0.H1", 0.9)},
            {"L0.H1": ("L0.H0", 0.9), "L1.H0": ("L0.H2", 0.3), "L2.MLP": ("L0.MLP", 0.8), "L3.MLP": ("L0.H0", 0.2)})]
    inf100 = {**base_inf, "L0.H2": 12.0}
    m100 = ({"L0.H0": ("L0.H1", 0.9), "L0.H2": ("L1.H0", 0.7), "L0.MLP": ("L2.MLP", 0.8), "L0.H1": ("L0.H1", 0.9)},
            {"L0.H1": ("L0.H0", 0.9), "L1.H0": ("L0.H2", 0.7), "L2.MLP": ("L0.MLP", 0.8), "L3.MLP": ("L0.MLP", 0.75)})
    h.append(cp(100, inf100, *m100))
    m200 = ({**m100[0], "L0.H0": ("L0.H1", 0.3)}, {**m100[1], "L0.H1": ("L0.H0", 0.3)})
    h.append(cp(200, inf100, *m200, ratio=2.5))
    h.append(cp(300, inf100, *m200, ratio=1.5))
    return h


def test_exactly_the_planted_events_at_their_steps():
    events = find_events(synthetic(), TEACHER_CIRCUIT, FUNCTIONS, Rules())
    got = {(e.kind, tuple(e.nodes), e.first_step, e.persists) for e in events}
    assert got == {
        ("discard", ("L1.H0",), 0, False),        # no counterpart until the successor emerges
        ("discard", ("L3.MLP",), 0, True),        # L3.MLP's only suitor is the merged MLP
        ("merge", ("L0.MLP", "L2.MLP", "L3.MLP"), 100, True),
        ("emergence", ("L0.H2", "L1.H0"), 100, True),
        ("discard", ("L0.H1",), 200, True),
        ("concentration", (), 200, False),
    }


def test_thresholds_change_what_counts():
    strict = find_events(synthetic(), TEACHER_CIRCUIT, FUNCTIONS, Rules(min_similarity=0.8))
    kinds = {(e.kind, e.first_step) for e in strict}
    assert ("merge", 100) not in kinds and ("emergence", 100) not in kinds
    none = find_events(synthetic(), TEACHER_CIRCUIT, FUNCTIONS, Rules(concentration_ratio=3.0))
    assert all(e.kind != "concentration" for e in none)


def test_split():
    h = [cp(0, {"L0.H0": 10.0, "L0.H1": 10.0},
            {"L0.H0": ("L1.H0", 0.8), "L0.H1": ("L1.H0", 0.6)}, {"L1.H0": ("L0.H0", 0.8)})]
    events = find_events(h, ["L1.H0"], {}, Rules())
    assert [(e.kind, e.nodes) for e in events] == [("split", ["L1.H0", "L0.H0", "L0.H1"])]
