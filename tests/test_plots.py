"""The circuit picture places every kind of edge receiver: a query head's q, a KV group's
shared k/v (grouped-query attention), an MLP and the logits."""

from PIL import Image

from kdmech.report.plots import _xy, circuits_png


def test_receivers_are_placed_and_a_gqa_circuit_is_drawn(tmp_path):
    assert _xy("L1.H2.q", 4) == (2, 1) and _xy("L1.MLP", 4) == (4.5, 1) and _xy("resid_final", 4) is None
    assert _xy("L1.G0.k", 4) == (1.5, 1)  # a KV group's input: the middle of its layer
    circuit = {"threshold": 0.2, "nodes": ["L0.H0", "L0.MLP", "L1.H1"], "completeness": 85.0, "edges_pruned": True,
               "edges": [["L0.H0", "L1.G0.k"], ["L0.H0", "L1.H1.q"], ["L0.MLP", "L1.MLP"], ["L1.H1", "resid_final"]]}
    path = tmp_path / "circuits.png"
    circuits_png(path, {"teacher": circuit, "student": circuit}, {"teacher": (2, 4), "student": (2, 4)},
                 {"L0.H0": "L0.H0"})
    assert Image.open(path).size[0] > 600
