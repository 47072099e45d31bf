"""BERT's fast ablation path (kdmech.analysis.ablation.bert_runner) against the reference: one full
TransformerLens-bridge forward per ablation set with the bridge's own hooks (itself checked
against hand-written Hugging Face hooks in test_bert_ablation.py). Same batches, same shapes:
the per-prompt metrics must be the same numbers, bit for bit, for every ablation kind, with
and without a memory budget, and node pruning must keep the same circuit."""

import pytest
import torch

from kdmech.analysis import AblationKind, boot, corrupted_activations
from kdmech.analysis.circuit import prune_nodes
from kdmech.analysis.ablation.engine import AblationEngine, Strategy
from kdmech.errors import KdmechError
from kdmech.tasks import NumeralTask, tokenize_prompts


@pytest.fixture(scope="module")
def bert(random_bert):
    return random_bert(layers=3, seed=1, attn=None)  # HF's default attention: the runner sets eager itself


@pytest.fixture(scope="module")
def cloze(tokenizer):
    # more than one reference batch of 64 prompts, the last one partial
    prompts = tokenize_prompts(NumeralTask(per_type=50, seed=2, cloze=True).prompts(), tokenizer, kind="masked")
    assert len(prompts) > 64 and len(prompts) % 64
    return prompts


def _sets(nodes):
    return [[]] + [[n] for n in nodes] + [nodes[:3], nodes[4:11], [nodes[-1], nodes[2]], nodes[6:]]


@pytest.mark.parametrize("kind", ["mean", "zero", "resample"])
@pytest.mark.parametrize("budget", [0, 9 * 40])
def test_fast_bert_ablations_equal_the_reference(bert, tokenizer, cloze, kind, budget):
    bridged = boot(bert, tokenizer)
    source = (None if kind == "zero" else
              corrupted_activations(bridged, cloze, keep_full=AblationKind(kind) is AblationKind.RESAMPLE))
    fast = AblationEngine(bridged, cloze, kind, source, max_batch_tokens=budget)
    reference = AblationEngine(bridged, cloze, kind, source, fast_path=False, max_batch_tokens=budget)
    assert fast.runner is not None and reference.runner is None and reference.strategy is Strategy.REFERENCE
    sets = _sets(bridged.nodes)
    got, want = fast.metrics(sets, per_prompt=True), reference.metrics(sets, per_prompt=True)
    assert len(got) == len(sets)
    for nodes, a, b in zip(sets, got, want):
        assert torch.equal(a, b), (nodes, (a - b).abs().max())
    assert fast.full_metric == reference.full_metric
    assert len({round(x.mean().item(), 6) for x in got}) > len(sets) // 2  # the ablations do differ


def test_node_pruning_keeps_the_same_circuit(bert, tokenizer, cloze):
    bridged = boot(bert, tokenizer)
    source = corrupted_activations(bridged, cloze)
    fast = AblationEngine(bridged, cloze, "mean", source)
    reference = AblationEngine(bridged, cloze, "mean", source, fast_path=False)
    if fast.full_metric <= 0:
        pytest.skip("this random BERT does not prefer the answer")
    assert prune_nodes(fast, 0.2) == prune_nodes(reference, 0.2)


def test_path_patching_stays_refused_for_bert(bert, tokenizer, cloze):
    engine = AblationEngine(boot(bert, tokenizer), cloze, "mean", None)
    assert engine.runner is not None
    with pytest.raises(KdmechError, match="bert family"):
        engine.residual_runner("path patching")
