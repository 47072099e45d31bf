"""Validating the alignment metric with noise (docs/method.md §9).

Every weight matrix of the student gets W + σ·std(W)·ε (ε standard normal, one seed per
repeat); A(teacher, noisy student) is recomputed each time. The curve is summarised by a fit
A(σ) ≈ a − b·ln σ over σ > 0 (with R²), the plateau (mean A over the largest two σ), and
Spearman's ρ between σ and A over every (σ, seed) point.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from kdmech.analysis.pair import compare
from kdmech.analysis.profile import ModelProfile, profile
from kdmech.tasks.prompt_set import PromptSet

SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def add_weight_noise(model, sigma: float, seed: int):
    """A copy of `model` with W + σ·std(W)·ε on every weight matrix (ndim ≥ 2)."""
    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.ndim >= 2 and sigma > 0:
                # drawn on the CPU whatever the model's device: one noisy student per seed
                p.add_(sigma * p.std() * torch.randn(p.shape, generator=gen, device="cpu").to(p.device))
    return noisy


@dataclass(frozen=True)
class NoiseCurve:
    sigmas: list[float]
    seeds: list[int]
    A: list[list[float]]
    """A[i][j]: σ = sigmas[i], seed = seeds[j]."""
    fit_a: float
    fit_b: float
    fit_r2: float
    plateau: float
    spearman_rho: float
    spearman_p: float

    @property
    def mean(self) -> list[float]:
        return [float(np.mean(row)) for row in self.A]

    def to_json(self) -> dict:
        return {**asdict(self), "A_mean": self.mean, "fit": "A ≈ a − b·ln σ (σ > 0)"}

    @classmethod
    def from_json(cls, d: dict) -> "NoiseCurve":
        return cls(**{k: v for k, v in d.items() if k not in ("A_mean", "fit")})


def summarise(sigmas, seeds, A) -> NoiseCurve:
    s = np.repeat(np.asarray(sigmas, float), len(seeds))
    a = np.asarray(A, float).ravel()
    pos = (s > 0) & np.isfinite(a)
    if len(set(s[pos])) >= 2:
        slope, intercept = np.polyfit(np.log(s[pos]), a[pos], 1)
        pred = intercept + slope * np.log(s[pos])
        ss_res, ss_tot = ((a[pos] - pred) ** 2).sum(), ((a[pos] - a[pos].mean()) ** 2).sum()
        r2 = float(1 - ss_res / ss_tot) if ss_tot > 0 else 1.0
    else:  # a log fit needs two noise levels above zero
        slope = intercept = r2 = float("nan")
    finite = np.isfinite(a)
    rho, p = spearmanr(s[finite], a[finite]) if finite.sum() > 2 else (float("nan"), float("nan"))
    means = np.asarray(A, float).mean(1)
    return NoiseCurve(list(map(float, sigmas)), list(seeds), [list(map(float, r)) for r in A],
                      float(intercept), float(-slope), r2, float(means[-2:].mean()), float(rho), float(p))


def noise_curve(teacher_profile: ModelProfile, student, tokenizer, prompts: PromptSet,
                sigmas=SIGMAS, seeds=(0, 1, 2), ablation="mean", progress=None,
                max_batch_tokens: int = 0, side=None, **compare_options) -> NoiseCurve:
    """`max_batch_tokens`: the memory budget of each noisy student's profile (`profile`).
    `side(profile)`: what A reads of a noisy student (`presets.alignment_side`; None or a
    None result: the profile itself); `compare_options` may carry the A `conventions`."""
    A = []
    for sigma in sigmas:
        row = []
        for seed in seeds:
            if sigma == 0 and row:  # no noise: every seed's student is the student itself
                row.append(row[0])
            else:
                noisy = profile(add_weight_noise(student, sigma, seed), tokenizer, prompts, ablation,
                                max_batch_tokens=max_batch_tokens)
                noisy = (side(noisy) if side else None) or noisy
                row.append(compare(teacher_profile, noisy, 0, prompts.task, **compare_options).alignment.A)
            if progress:
                progress(1)
        A.append(row)
    return summarise(sigmas, seeds, A)
