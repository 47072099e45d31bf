"""How far attribution agrees with exact ablation (docs/method.md §5.5): rank correlations of node
scores with exact single-node influence, top-k overlap, and the Jaccard index of two circuits."""

from __future__ import annotations

from scipy.stats import kendalltau, spearmanr

from kdmech.analysis.influence import Influence

TOP_K = 10


def jaccard(a, b) -> float:
    """|A ∩ B| / |A ∪ B| (1 for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def rank_agreement(node_scores: dict[str, float], influence: Influence, k: int = TOP_K) -> dict:
    """Attribution's influence estimate |100·s_n / LD_full| against exact single-node influence
    I_n (§4): Spearman ρ, Kendall τ and the overlap of the top-k nodes of each (|top-k ∩ top-k| / k)."""
    names = [n for n in influence.influence if n in node_scores]
    ld = influence.metric
    est = [abs(100.0 * node_scores[n] / ld) if ld else 0.0 for n in names]
    exact = [influence.influence[n] for n in names]
    k = min(k, len(names))
    top = lambda v: {names[i] for i in sorted(range(len(names)), key=lambda i: -v[i])[:k]}  # noqa: E731
    rho, tau = spearmanr(est, exact).statistic, kendalltau(est, exact).statistic
    return {"spearman": float(rho), "kendall": float(tau), "top_k": k,
            "top_k_overlap": len(top(est) & top(exact)) / k if k else 1.0}
