"""Greater-than: prompts, the probability-difference metric against numpy, and the ablation
engines under that metric."""

import numpy as np
import pytest
import torch

from kdmech.analysis import AblationKind, Node, ablated_metric_mean, boot, corrupted_activations
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.tasks import GreaterThanTask, tokenize_prompts
from kdmech.tasks.filtering import accuracy_and_ld
from kdmech.tasks.prompt_set import PromptSet


@pytest.fixture(scope="module")
def gt_prompts(tokenizer):
    return tokenize_prompts(GreaterThanTask(n=24, seed=4).prompts(), tokenizer)


def test_prompts_and_tokenization(tokenizer, gt_prompts):
    texts = gt_prompts.texts
    for clean, corrupt, wrong in zip(texts.clean, texts.corrupted, texts.wrong_answers):
        year = clean.split()[6]
        assert len(year) == 4 and year[2:] == wrong and corrupt.split()[6] == year[:2] + "01"
        assert clean.endswith("to the year " + year[:2])
    assert tokenizer.tokenize("year 1732") == ["year", "17", "32"]
    assert gt_prompts.metric == "greater_than" and len(gt_prompts.year_ids) == 100
    assert [tokenizer.decode([int(i)]) for i in gt_prompts.year_ids[[0, 7, 42]]] == ["00", "07", "42"]
    assert torch.equal(gt_prompts.thresholds, torch.tensor([int(w) for w in texts.wrong_answers]))


def numpy_metric(model, prompts):
    with torch.no_grad():
        logits = model(input_ids=prompts.clean).logits[torch.arange(len(prompts)), prompts.positions]
    p = np.exp(logits.numpy() - logits.numpy().max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = []
    for i in range(len(prompts)):
        xx = int(prompts.texts.wrong_answers[i])
        years = p[i, prompts.year_ids.numpy()]
        out.append(years[xx + 1:].sum() - years[:xx + 1].sum())
    return np.array(out)


def test_metric_matches_numpy(tiny_gpt2, gt_prompts):
    expected = numpy_metric(tiny_gpt2, gt_prompts)
    got = accuracy_and_ld(tiny_gpt2, gt_prompts)
    assert got["metric"] == "greater_than"
    assert got["logit_diff"] == pytest.approx(float(expected.mean()), abs=1e-5)


@pytest.mark.parametrize("fast_path", [True, False], ids=["gpt2-runner", "bridge"])
def test_engines_equal_the_reference_under_the_greater_than_metric(tiny_gpt2, tokenizer, gt_prompts, fast_path):
    bridged = boot(tiny_gpt2, tokenizer)
    source = corrupted_activations(bridged, gt_prompts)
    engine = AblationEngine(bridged, gt_prompts, "mean", source, fast_path=fast_path)
    assert engine.full_metric == pytest.approx(float(numpy_metric(tiny_gpt2, gt_prompts).mean()), abs=1e-5)
    sets = [[Node(0, 1)], [Node(1)], [Node(0), Node(1, 3)]]
    for nodes, got in zip(sets, engine.metrics(sets)):
        assert got == pytest.approx(ablated_metric_mean(bridged, gt_prompts, nodes, AblationKind.MEAN, source), abs=1e-5)


def test_prompt_set_json_keeps_the_metric(tmp_path, gt_prompts):
    gt_prompts.save(tmp_path / "p.json")
    back = PromptSet.load(tmp_path / "p.json")
    assert back.metric == "greater_than" and torch.equal(back.year_ids, gt_prompts.year_ids)
    assert torch.equal(back.subset([1, 3]).thresholds, gt_prompts.thresholds[[1, 3]])
