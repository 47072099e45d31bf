"""Gradient attribution (EAP, EAP-IG; docs/method.md §5.5) against independent computations.

- a planted linear micro-model (plain torch): every node's EAP score equals the exact effect of
  replacing it, computed by one plain hooked forward per node;
- EAP node scores of GPT-2 (mean, resample and zero ablation) and BERT equal
  (a_corr − a_clean)·∂metric/∂a from plain autograd with one Hugging Face hook per node (no
  kdmech code but the prompts), a_corr what the ablation kind patches in;
- EAP-IG with many steps, its path restricted to one node, approaches the exact effect of
  ablating that node; node scores sum to the exact effect of ablating all (completeness);
- each sender's edges sum to its node score; scores do not depend on the memory budget;
- the verified circuit meets the pruning definition (§5.1) by exact ablation.
"""

from dataclasses import replace

import pytest
import torch

from kdmech.analysis import Node
from kdmech.analysis.attribution.discovery import CircuitFinder, estimated_exact_forwards, resolve
from kdmech.analysis.attribution.paths import edge_attribution, node_attribution
from kdmech.analysis.attribution.scores import Path, attribute, path_points
from kdmech.analysis.circuit import retained_with_only
from kdmech.analysis.options import AnalyzeOptions
from kdmech.analysis.profile import profile
from kdmech.errors import KdmechError


def solving(prompts):
    """The prompts with answer and wrong answer swapped (the random model's LD turns positive)."""
    return replace(prompts, answers=prompts.wrong_answers, wrong_answers=prompts.answers)


@pytest.fixture(scope="module")
def gpt2_engine(tiny_gpt2, tokenizer, prompts):
    return profile(tiny_gpt2, tokenizer, solving(prompts), "mean", keep_corrupted=True).engine


TARGETS = {"mean": lambda corrupted: corrupted.mean(0), "resample": lambda corrupted: corrupted,
           "zero": torch.zeros_like}
"""What each ablation kind patches in, from the node's activations on the corrupted prompts."""


def hooked_eap(model, prompts, z_module, mlp_module, n_layers, n_heads, logits_fn, kind="mean"):
    """EAP by plain autograd, one hooked forward per node: (the activation the ablation kind
    patches in — the corrupted mean, the paired corrupted row, zero — minus the node's clean
    activation) · ∂(mean LD)/∂activation."""
    rows = torch.arange(len(prompts))

    def record(ids):
        acts, hs = {}, []
        for l in range(n_layers):
            hs.append(z_module(l).register_forward_pre_hook(lambda m, a, l=l: acts.__setitem__(("z", l), a[0])))
            hs.append(mlp_module(l).register_forward_hook(lambda m, a, o, l=l: acts.__setitem__(("mlp", l), o)))
        with torch.no_grad():
            logits_fn(ids)
        for h in hs:
            h.remove()
        return acts

    corrupted = {k: TARGETS[kind](v) for k, v in record(prompts.corrupted).items()}
    out = {}
    d_head = corrupted[("z", 0)].shape[-1] // n_heads
    for (where, l), target in corrupted.items():
        seen = {}

        def grab(act, seen=seen):
            seen["a"] = act.detach().requires_grad_(True)
            return seen["a"]
        h = (z_module(l).register_forward_pre_hook(lambda m, a: (grab(a[0]),)) if where == "z" else
             mlp_module(l).register_forward_hook(lambda m, a, o: grab(o)))
        with torch.enable_grad():
            at = logits_fn(prompts.clean)[rows, prompts.positions]
            ld = (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean()
            (grad,) = torch.autograd.grad(ld, seen["a"])
        h.remove()
        product = ((target - seen["a"]) * grad).detach()
        if where == "mlp":
            out[f"L{l}.MLP"] = product.sum().item()
        else:
            for head in range(n_heads):
                out[f"L{l}.H{head}"] = product[..., head * d_head:(head + 1) * d_head].sum().item()
    return out


@pytest.mark.parametrize("kind", ["mean", "resample", "zero"])
def test_eap_nodes_equal_hooked_autograd_gpt2(tiny_gpt2, tokenizer, prompts, gpt2_engine, kind):
    m = tiny_gpt2
    engine = gpt2_engine if kind == "mean" else profile(m, tokenizer, solving(prompts), kind).engine
    oracle = hooked_eap(m, engine.prompts, lambda l: m.transformer.h[l].attn.c_proj,
                        lambda l: m.transformer.h[l].mlp, 2, 4, lambda ids: m(input_ids=ids).logits, kind)
    scores = node_attribution(engine, "eap").by_node()
    assert scores.keys() == oracle.keys()
    for name in oracle:
        assert scores[name] == pytest.approx(oracle[name], rel=1e-4, abs=1e-5), name


def test_eap_nodes_equal_hooked_autograd_bert(random_bert, tokenizer):
    from kdmech.tasks import NumeralTask, tokenize_prompts
    model = random_bert(2, seed=1)
    ps = tokenize_prompts(NumeralTask(per_type=4, seed=3, cloze=True).prompts(), tokenizer, "masked")
    engine = profile(model, tokenizer, ps, "mean").engine
    layers = model.bert.encoder.layer
    oracle = hooked_eap(model, engine.prompts, lambda l: layers[l].attention.output.dense,
                        lambda l: layers[l].output.dense, 2, 4,
                        lambda ids: model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
    scores = node_attribution(engine, "eap").by_node()
    for name in oracle:
        assert scores[name] == pytest.approx(oracle[name], rel=1e-3, abs=1e-4), name
    with pytest.raises(KdmechError, match="post-LayerNorm"):
        edge_attribution(engine, {Node(0), Node(1)}, "eap")


class Planted(torch.nn.Module):
    """A linear transformer-shaped micro-model: heads read the residual through a causal mean
    over positions, MLPs are linear, the read-out is linear; the metric is linear in each node."""

    def __init__(self, vocab=12, d=8, n_layers=2, n_heads=2, d_head=3):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.embed = torch.nn.Parameter(torch.randn(vocab, d, generator=g))
        self.w_in = torch.nn.ModuleList(torch.nn.Linear(d, n_heads * d_head) for _ in range(n_layers))
        self.w_out = torch.nn.ModuleList(torch.nn.Linear(n_heads * d_head, d) for _ in range(n_layers))
        self.mlp = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(n_layers))
        self.unembed = torch.nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.embed[ids]
        steps = torch.arange(1, ids.shape[1] + 1)[None, :, None]
        for w_in, w_out, mlp in zip(self.w_in, self.w_out, self.mlp):
            x = x + w_out(w_in(x).cumsum(1) / steps)
            x = x + mlp(x)
        return self.unembed(x)


class PlantedAdapter:
    edges = False
    n_layers, n_heads, d_head = 2, 2, 3

    def __init__(self, model):
        self.model = model

    def z_module(self, l):
        return self.model.w_out[l]

    def mlp_module(self, l):
        return self.model.mlp[l]

    def logits_at(self, ids, positions):
        return self.model(ids)[torch.arange(ids.shape[0]), positions]


def test_planted_linear_model_eap_is_exact(prompts):
    model = Planted().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    n, t = 6, 5
    ids = torch.randint(0, 12, (n, t), generator=g)
    ps = replace(prompts.subset(list(range(n))), clean=ids, positions=torch.full((n,), t - 1),
                 answers=torch.randint(0, 12, (n,), generator=g), wrong_answers=torch.randint(0, 12, (n,), generator=g))
    z_t = {l: torch.randn(t, 6, generator=g).expand(n, t, 6) for l in range(2)}
    m_t = {l: torch.randn(t, 8, generator=g).expand(n, t, 8) for l in range(2)}
    scores = attribute(PlantedAdapter(model), ps, Path(z_t.__getitem__, m_t.__getitem__), path_points("eap", 1),
                       [slice(0, n)]).by_node()
    rows = torch.arange(n)

    def ld(hook=None):
        h = hook() if hook else None
        with torch.no_grad():
            out = model(ids)[rows, t - 1]
        if h:
            h.remove()
        return (out[rows, ps.answers] - out[rows, ps.wrong_answers]).mean().item()

    base = ld()
    for l in range(2):
        for head in range(2):
            cols = slice(3 * head, 3 * head + 3)

            def patch(m, a, cols=cols, l=l):
                z = a[0].clone()
                z[..., cols] = z_t[l][..., cols]
                return (z,)
            exact = ld(lambda patch=patch, l=l: model.w_out[l].register_forward_pre_hook(patch)) - base
            assert scores[f"L{l}.H{head}"] == pytest.approx(exact, rel=1e-4, abs=1e-5)
        exact = ld(lambda l=l: model.mlp[l].register_forward_hook(lambda m, a, o: m_t[l].clone())) - base
        assert scores[f"L{l}.MLP"] == pytest.approx(exact, rel=1e-4, abs=1e-5)


def test_eap_ig_approaches_exact_single_node_and_completeness(gpt2_engine):
    e = gpt2_engine
    for node in (Node(0, 1), Node(1), Node(1, 2)):
        exact = e.metric([node]) - e.full_metric
        eap = node_attribution(e, "eap", moving={node}).by_node()[node.name]
        ig = node_attribution(e, "eap-ig", 48, moving={node}).by_node()[node.name]
        assert abs(ig - exact) < max(1e-3 * abs(exact), 1e-5)
        assert abs(ig - exact) <= abs(eap - exact) + 1e-6
    total = node_attribution(e, "eap-ig", 48).node_scores.sum().item()
    assert total == pytest.approx(e.metric(list(e.bridged.nodes)) - e.full_metric, rel=1e-3)


def test_edges_sum_to_nodes_and_budget_does_not_change_scores(tiny_gpt2, tokenizer, prompts, gpt2_engine):
    whole = node_attribution(gpt2_engine, "eap-ig", 3, edges=True)
    assert torch.allclose(whole.edge_scores.sum(1), whole.node_scores, atol=1e-5)
    circuit = {Node(0, 1), Node(0), Node(1, 2), Node(1)}
    on_circuit = edge_attribution(gpt2_engine, circuit, "eap")
    live = [i for i, n in enumerate(on_circuit.nodes) if n in circuit]
    assert torch.allclose(on_circuit.edge_scores.sum(1)[live], on_circuit.node_scores[live], atol=1e-5)
    budget = profile(tiny_gpt2, tokenizer, solving(prompts), "mean", keep_corrupted=True,
                     max_batch_tokens=3 * prompts.seq_len).engine
    assert len(budget.row_chunks) > 1
    chunked = node_attribution(budget, "eap-ig", 3, edges=True)
    assert torch.allclose(chunked.node_scores, whole.node_scores, atol=1e-5)
    assert torch.allclose(chunked.edge_scores, whole.edge_scores, atol=1e-5)
    assert torch.allclose(edge_attribution(budget, circuit, "eap").edge_scores, on_circuit.edge_scores, atol=1e-5)


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_verified_circuit_meets_the_pruning_definition(gpt2_engine, method):
    e = gpt2_engine
    c = CircuitFinder(method)(e, 0.2, edges=True)
    nodes = {Node.parse(n) for n in c.nodes}
    keep = 100 * 0.8
    assert retained_with_only(e, nodes) >= keep
    assert c.completeness == pytest.approx(retained_with_only(e, nodes))
    for n in nodes:  # every kept node is necessary
        assert retained_with_only(e, nodes - {n}) < keep
    assert c.discovery["method"] == method and c.edges_pruned
    limit = 0.8 * e.full_metric
    from kdmech.analysis.circuit import path_patching
    exact = path_patching(e, nodes).scores
    assert all(exact[edge] < limit for edge in c.edges)  # every kept edge passes §5.2's rule


def test_discovery_options_and_auto_rule():
    with pytest.raises(KdmechError, match="discovery"):
        AnalyzeOptions(discovery="fast")
    with pytest.raises(KdmechError, match="ig_steps"):
        AnalyzeOptions(ig_steps=0)
    assert resolve("auto", 2, 4, True) == "exact"
    assert estimated_exact_forwards(12, 12, True) > 1000 and resolve("auto", 12, 12, True) == "eap-ig"
    assert resolve("eap", 12, 12, True) == "eap"


def test_exact_agreement_is_the_jaccard_with_exact_pruning(gpt2_engine):
    from kdmech.analysis.circuit import discover

    exact = discover(gpt2_engine, 0.2, edges=True)
    c = CircuitFinder("eap-ig", exact_agreement=True)(gpt2_engine, 0.2, edges=True)
    agreement = c.discovery["agreement"]
    a, b = set(c.nodes), set(exact.nodes)
    assert agreement["jaccard_nodes"] == pytest.approx(len(a & b) / len(a | b))
    e, f = ({tuple(x.to_json()) for x in circuit.edges} for circuit in (c, exact))
    assert agreement["jaccard_edges"] == pytest.approx(len(e & f) / len(e | f) if e | f else 1.0)
    assert agreement["exact_nodes"] == exact.nodes and agreement["exact_edges"] == len(exact.edges)


def with_edge_estimates(scores, estimate):
    """`scores` with every edge score replaced by estimate(edge) (0 where the sender is not
    upstream)."""
    from kdmech.analysis.edges import Edge, upstream
    table = torch.zeros_like(scores.edge_scores)
    for i, s in enumerate(scores.nodes):
        for j, r in enumerate(scores.receivers):
            if upstream(s, r):
                table[i, j] = estimate(Edge(s, r))
    return replace(scores, edge_scores=table)


@pytest.mark.parametrize("estimates", ["exact", "reversed"])
def test_edge_verification_stops_by_its_calibrated_margin(gpt2_engine, estimates):
    """With estimates equal to the exact path-patched change, verification keeps exactly §5.2's
    edges and stops after the round holding the last of them; with estimates reversed (the most
    harmful edges ranked last), the margin grows and it still finds every one of §5.2's edges."""
    from kdmech.analysis.attribution.verified import EDGE_ROUND, verify_edges
    from kdmech.analysis.circuit import path_patching, prune_edges

    e = gpt2_engine
    nodes = set(e.bridged.nodes)  # the whole model: 83 edges, 13 of them kept at T = 0.05
    exact = path_patching(e, nodes)
    sign = 1 if estimates == "exact" else -1
    scores = with_edge_estimates(edge_attribution(e, nodes, "eap"),
                                 lambda edge: sign * (exact.scores.get(edge, exact.baseline) - exact.baseline))
    kept, checked, margin = verify_edges(e, nodes, scores, 0.05)
    expected = prune_edges(e, nodes, 0.05)
    assert set(kept) == set(expected) and len(kept) == len(expected) and 0 < len(expected) < len(exact.scores)
    if estimates == "exact":
        assert margin < 1e-5
        assert checked == min(len(exact.scores), EDGE_ROUND * -(-len(expected) // EDGE_ROUND))
    else:
        assert margin > 0.1


def test_a_circuits_edge_scores_need_only_the_layers_of_its_heads(gpt2_engine):
    """Edge attribution of a circuit gives attention receivers to the layers holding its heads
    only; its edges score as with every layer's receivers in place."""
    from kdmech.analysis.attribution.paths import circuit_edge_path, engine_adapter
    from kdmech.analysis.circuit import EDGES

    e = gpt2_engine
    circuit = {Node(1, 2), Node(0), Node(1)}  # heads in layer 1 only
    restricted = edge_attribution(e, circuit, "eap-ig", 2)
    every = attribute(engine_adapter(e), e.prompts, circuit_edge_path(e, circuit), path_points("eap-ig", 2),
                      e.row_chunks, edges=True, method="eap-ig")
    assert {r.layer for r in restricted.receivers if r.port in "qkv"} == {1}
    receivers = e.residual_runner(EDGES).receivers(circuit)
    a, b = restricted.edges(circuit, receivers), every.edges(circuit, receivers)
    assert a.keys() == b.keys() and len(a) > 3
    for edge in a:
        assert a[edge] == pytest.approx(b[edge], rel=1e-4, abs=1e-6)
