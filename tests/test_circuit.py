"""Circuit discovery on models whose answer is known, and on a trained teacher."""

import pytest
import torch

from kdmech.analysis import AblationKind, Node, ablated_metric_mean, boot, corrupted_activations
from kdmech.analysis.edges import Edge
from kdmech.analysis.circuit import (backward_order, discover, forward_order, path_patching, prune_nodes,
                                     retained_with_only, threshold_sweep)
from kdmech.analysis.pruning_orders import pruning_orders
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.models import TinyGPT2Spec, load_causal_lm
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import filter_by_teacher

PLANTED = Node(1, 2)


def planted_model(tokenizer):
    """Every head but L1.H2 writes nothing (its rows of W_O are zero) and every MLP writes
    nothing; L1.H2 writes strongly. The task can only run through L1.H2."""
    model = TinyGPT2Spec(n_layer=2, n_head=4, n_embd=32).build(tokenizer, seed=11).eval()
    d_head = 8
    with torch.no_grad():
        for layer, block in enumerate(model.transformer.h):
            for h in range(4):
                rows = slice(h * d_head, (h + 1) * d_head)
                if (layer, h) == (PLANTED.layer, PLANTED.head):
                    block.attn.c_proj.weight[rows] *= 200
                else:
                    block.attn.c_proj.weight[rows] = 0
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    return model


def planted_prompts(model, tokenizer, paired: bool = False):
    """Answers the planted model gets right and loses when L1.H2 is mean-ablated (`paired`:
    when L1.H2 outputs what it does on the paired corrupted prompt), chosen with plain HF hooks
    (no kdmech ablation code)."""
    base = tokenize_prompts(NumeralTask(per_type=20, seed=5).prompts(), tokenizer)
    c_proj = model.transformer.h[PLANTED.layer].attn.c_proj
    cols = slice(PLANTED.head * 8, (PLANTED.head + 1) * 8)
    grabbed = {}
    handle = c_proj.register_forward_pre_hook(lambda m, a: grabbed.update(z=a[0].clone()))
    with torch.no_grad():
        model(base.corrupted)
    handle.remove()
    new = grabbed["z"] if paired else grabbed["z"].mean(0)

    def patch(m, a):
        z = a[0].clone()
        z[:, :, cols] = new[..., cols]
        return (z,)

    rows = torch.arange(len(base))
    with torch.no_grad():
        full = model(base.clean).logits[rows, base.positions]
        handle = c_proj.register_forward_pre_hook(patch)
        ablated = model(base.clean).logits[rows, base.positions]
        handle.remove()
    answers, wrongs = full.argmax(-1), ablated.argmax(-1)
    keep = (answers != wrongs).nonzero().flatten().tolist()
    assert len(keep) >= 10
    from kdmech.tasks.prompt_set import PromptSet
    chosen = PromptSet(base.texts.subset(keep), base.clean[keep], base.corrupted[keep],
                       answers[keep], wrongs[keep], base.positions[keep])
    return chosen, base


def test_orders():
    nodes = [Node(0, 0), Node(0, 1), Node(0), Node(1, 0), Node(1, 1), Node(1)]
    assert [n.name for n in backward_order(nodes)] == ["L1.MLP", "L1.H0", "L1.H1", "L0.MLP", "L0.H0", "L0.H1"]
    assert [n.name for n in forward_order(nodes)] == ["L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"]


def test_discovery_finds_the_planted_head(tokenizer):
    model = planted_model(tokenizer)
    prompts, base = planted_prompts(model, tokenizer)
    bridged = boot(model, tokenizer)
    # the means come from the whole corrupted set, as when the answers were chosen
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, base))
    circuit = discover(engine, 0.20, edges=False)
    assert circuit.nodes == ["L1.H2"]
    assert circuit.completeness == pytest.approx(100.0, abs=1e-3)
    assert circuit.faithfulness <= 0  # every answer flips without the head


def test_edge_pruning_keeps_the_planted_path(tokenizer):
    """The head's only path is to the logits; path patching gives it its paired corrupted
    output, so the answers here are those the model loses when that happens."""
    model = planted_model(tokenizer)
    prompts, base = planted_prompts(model, tokenizer, paired=True)
    bridged = boot(model, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, base))
    circuit = discover(engine, 0.20)
    assert circuit.nodes == ["L1.H2"] and circuit.edge_nodes == ["L1.H2"]
    assert [e.to_json() for e in circuit.edges] == [["L1.H2", "resid_final"]]
    # one node, one path: patching it is resample-ablating the head
    paired = corrupted_activations(bridged, prompts, keep_full=True)
    resampled = ablated_metric_mean(bridged, prompts, [PLANTED], AblationKind.RESAMPLE, paired)
    scored = path_patching(engine, {PLANTED})
    assert scored.baseline == pytest.approx(engine.full_metric, abs=1e-5)
    assert scored.scores[Edge.from_json(["L1.H2", "resid_final"])] == pytest.approx(resampled, abs=1e-5)


@pytest.fixture(scope="module")
def teacher_engine(trained_teacher):
    path, _ = trained_teacher
    model, tok = load_causal_lm(path)
    prompts = filter_by_teacher(model, tokenize_prompts(NumeralTask(per_type=16, seed=8).prompts(), tok))
    bridged = boot(model, tok)
    return AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))


def test_discovered_circuit_meets_its_definition(teacher_engine):
    """Checked with the plain reference ablation (full forwards through the bridge)."""
    engine = teacher_engine
    circuit = discover(engine, 0.20, edges=False)
    bridged, prompts = engine.bridged, engine.prompts
    source = engine.source
    ld_full = engine.full_metric
    kept = {Node.parse(n) for n in circuit.nodes}
    outside = [n for n in bridged.nodes if n not in kept]
    ld = ablated_metric_mean(bridged, prompts, outside, AblationKind.MEAN, source)
    assert 100 * ld / ld_full >= 80 and circuit.completeness == pytest.approx(100 * ld / ld_full, abs=1e-3)
    for node in kept:
        ld = ablated_metric_mean(bridged, prompts, outside + [node], AblationKind.MEAN, source)
        assert 100 * ld / ld_full < 80, f"{node} could have been removed"


def test_threshold_sweep_table(teacher_engine):
    sweep = threshold_sweep(teacher_engine, (0.10, 0.20, 0.30))
    rows = {r["threshold"]: r for r in sweep.rows()}
    assert rows[0.20]["jaccard_vs_ref"] == 1.0
    assert rows[0.10]["nodes"] >= rows[0.30]["nodes"]  # stricter keep-fraction, bigger circuit
    for r in rows.values():
        assert r["completeness"] >= 100 * (1 - r["threshold"]) - 1e-6
        assert r["heads"] + r["mlps"] == r["nodes"]
    for c in sweep.circuits:
        assert c.edges_pruned and all(len(e.to_json()) == 2 for e in c.edges)


# --- pruning orders ----------------------------------------------------------------------------

def test_pruning_orders_report_each_circuit_and_their_overlap(teacher_engine):
    engine = teacher_engine
    nodes = list(engine.bridged.nodes)
    default, _ = prune_nodes(engine, 0.2)
    r = pruning_orders(engine, 0.2, n_orders=4, seed=0, default=[n.name for n in default])
    sets = [set(c["nodes"]) for c in r["circuits"]]
    for c, s in zip(r["circuits"], sets):
        assert c["completeness"] >= 80.0 - 1e-9
        assert c["completeness"] == pytest.approx(
            retained_with_only(engine, {n for n in nodes if n.name in s}))
    assert set(r["union"]) == set.union(*sets) and set(r["intersection"]) == set.intersection(*sets)
    assert r["node_frequency"] == {n.name: sum(n.name in s for s in sets) / 4 for n in sorted(nodes)}
    assert r["distinct_circuits"] == len({frozenset(s) for s in sets})
    assert r["default_order"]["found_by"] == sum(s == {n.name for n in default} for s in sets)
    again = pruning_orders(engine, 0.2, n_orders=4, seed=0)
    assert [c["nodes"] for c in again["circuits"]] == [c["nodes"] for c in r["circuits"]]  # seeded
