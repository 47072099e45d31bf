"""Distillation loss terms against numpy, written from the formulas of docs/method.md §11.1."""

import numpy as np
import pytest
import torch

from kdmech.distill.losses import LossWeights, causal_lm_ce, hidden_cosine, kd_kl
from kdmech.errors import KdmechError


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 7, generator=g)
    t = torch.randn(2, 5, 7, generator=g)
    ids = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    return s, t, ids, mask


def test_kl_term_is_t_squared_kl_teacher_to_student_over_valid_tokens(batch):
    s, t, _, mask = batch
    T = 2.0
    total, count = 0.0, 0
    for b in range(2):
        for i in range(5):
            if not mask[b, i]:
                continue
            ls, lt = np_log_softmax(s[b, i].numpy() / T), np_log_softmax(t[b, i].numpy() / T)
            total += float((np.exp(lt) * (lt - ls)).sum())
            count += 1
    assert kd_kl(s, t, mask, T).item() == pytest.approx(T * T * total / count, rel=1e-5)
    assert kd_kl(t, t, mask, T).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_term_is_next_token_cross_entropy(batch):
    s, _, ids, mask = batch
    losses = []
    for b in range(2):
        for i in range(4):
            if mask[b, i] and mask[b, i + 1]:
                losses.append(-np_log_softmax(s[b, i].numpy())[ids[b, i + 1]])
    assert causal_lm_ce(s, ids, mask).item() == pytest.approx(np.mean(losses), rel=1e-5)


def test_cosine_term_over_layer_pairs(batch):
    _, _, _, mask = batch
    g = torch.Generator().manual_seed(1)
    hs = [torch.randn(2, 5, 4, generator=g) for _ in range(2)]
    ht = [torch.randn(2, 5, 4, generator=g) for _ in range(2)]
    per_layer = []
    for a, b in zip(hs, ht):
        vals = [1 - np.dot(a[i, j], b[i, j]) / (np.linalg.norm(a[i, j]) * np.linalg.norm(b[i, j]))
                for i in range(2) for j in range(5) if mask[i, j]]
        per_layer.append(np.mean(vals))
    assert hidden_cosine(hs, ht, mask).item() == pytest.approx(np.mean(per_layer), rel=1e-5)
    assert hidden_cosine(hs, hs, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_golden_values():
    """Fixed inputs whose terms were computed by hand once: a regression guard."""
    s = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    t = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]])
    ids = torch.tensor([[0, 1]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # CE: -log softmax([2,0,-1])[1] = log(e^2 + 1 + e^-1) - 0
    assert causal_lm_ce(s, ids, mask).item() == pytest.approx(np.log(np.e**2 + 1 + np.e**-1), rel=1e-6)
    # KL at T=1, first position: p_t = softmax([1,1,0]), p_s = softmax([2,0,-1])
    pt = np.exp([1, 1, 0]) / np.exp([1, 1, 0]).sum()
    ps = np.exp([2, 0, -1]) / np.exp([2, 0, -1]).sum()
    assert kd_kl(s[:, :1], t[:, :1], mask[:, :1], 1.0).item() == pytest.approx(
        float((pt * np.log(pt / ps)).sum()), rel=1e-6)


def test_weights_are_validated():
    with pytest.raises(KdmechError, match="temperature"):
        LossWeights(temperature=0)
