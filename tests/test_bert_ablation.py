"""BERT on the bridge: a single head's mean ablation at [MASK] equals a
hand-written Hugging Face hook on BertSelfAttention's per-head context (before the output
projection); an MLP's ablation equals a hook on BertOutput's dense layer."""

import pytest
import torch

from kdmech.analysis import AblationKind, Node, ablated_metric_mean, boot, corrupted_activations
from kdmech.analysis.ablation.engine import AblationEngine, Strategy
from kdmech.tasks import NumeralTask, tokenize_prompts


@pytest.fixture(scope="module")
def bert(random_bert):
    return random_bert(layers=2, seed=0)


@pytest.fixture(scope="module")
def cloze(tokenizer):
    return tokenize_prompts(NumeralTask(per_type=6, seed=2, cloze=True).prompts(), tokenizer, kind="masked")


def test_cloze_prompts(cloze, tokenizer):
    assert cloze.task == "numerals-cloze"
    assert (cloze.clean[:, 0] == tokenizer.cls_token_id).all() and (cloze.clean[:, -1] == tokenizer.sep_token_id).all()
    assert (cloze.clean[torch.arange(len(cloze)), cloze.positions] == tokenizer.mask_token_id).all()
    assert all(t.split(" done in ")[1].startswith("1.") for t in cloze.texts.clean if " done in " in t)
    assert set(cloze.texts.answers) == {" 5"} and set(cloze.texts.wrong_answers) == {" 4"}


def hf_ld(model, prompts):
    with torch.no_grad():
        logits = model(input_ids=prompts.clean, attention_mask=torch.ones_like(prompts.clean)).logits
    rows = torch.arange(len(prompts))
    at = logits[rows, prompts.positions]
    return (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()


def capture(model, module, ids):
    seen = {}
    handle = module.register_forward_hook(lambda m, a, out: seen.update(x=(out[0] if isinstance(out, tuple) else out).clone()))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    handle.remove()
    return seen["x"]


def test_bert_head_mean_ablation_matches_hf_hook(bert, tokenizer, cloze):
    layer, head, d_head = 1, 2, 8
    self_attn = bert.bert.encoder.layer[layer].attention.self
    cols = slice(head * d_head, (head + 1) * d_head)
    mean = capture(bert, self_attn, cloze.corrupted).mean(0)

    def patch(m, a, out):
        context = (out[0] if isinstance(out, tuple) else out).clone()
        context[:, :, cols] = mean[:, cols]
        return (context, *out[1:]) if isinstance(out, tuple) else context

    handle = self_attn.register_forward_hook(patch)
    expected = hf_ld(bert, cloze)
    handle.remove()
    bridged = boot(bert, tokenizer)
    source = corrupted_activations(bridged, cloze)
    got = ablated_metric_mean(bridged, cloze, [Node(layer, head)], AblationKind.MEAN, source)
    assert got == pytest.approx(expected, abs=1e-4)
    assert abs(got - hf_ld(bert, cloze)) > 1e-3  # the ablation did something
    engine = AblationEngine(bridged, cloze, "mean", source)  # BERT's fast path (bert_runner)
    assert engine.runner is not None and engine.strategy is Strategy.RUNNER
    assert engine.full_metric == pytest.approx(hf_ld(bert, cloze), abs=1e-4)
    assert engine.metric([Node(layer, head)]) == pytest.approx(expected, abs=1e-4)


def test_bert_mlp_mean_ablation_matches_hf_hook(bert, tokenizer, cloze):
    dense = bert.bert.encoder.layer[0].output.dense
    mean = capture(bert, dense, cloze.corrupted).mean(0)
    handle = dense.register_forward_hook(lambda m, a, out: mean.expand_as(out))
    expected = hf_ld(bert, cloze)
    handle.remove()
    bridged = boot(bert, tokenizer)
    got = ablated_metric_mean(bridged, cloze, [Node(0)], AblationKind.MEAN, corrupted_activations(bridged, cloze))
    assert got == pytest.approx(expected, abs=1e-4)


def test_bert_mlp_write_norms_and_refused_probes(bert, tokenizer, cloze):
    """The per-token MLP write norms hold for BERT (a hook on BertOutput.dense gives them);
    probes and edges that assume an additive residual refuse with the reason."""
    from kdmech.analysis import profile
    from kdmech.analysis.circuit import prune_edges
    from kdmech.analysis.probes import logit_attribution, mlp_write_norms, successor_scores
    from kdmech.errors import KdmechError

    prof = profile(bert, tokenizer, cloze)
    norms = mlp_write_norms(prof)
    for l in range(2):
        by_hand = capture(bert, bert.bert.encoder.layer[l].output.dense, cloze.clean).norm(dim=-1).mean(0)
        assert norms[f"L{l}.MLP"] == pytest.approx(by_hand.tolist(), rel=1e-4, abs=1e-4)
    for call in (lambda: logit_attribution(prof.engine), lambda: successor_scores(prof.engine, tokenizer),
                 lambda: prune_edges(prof.engine, {Node(0)})):
        with pytest.raises(KdmechError, match="post-LayerNorm"):
            call()
