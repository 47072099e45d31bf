"""How much of A under the authors' MLP score is the score's own sign ambiguity
(docs/method.md §12).

The authors' raw MLP score of a (student layer, teacher layer) pair is |mean of the 3×3
cosines| between the two layers' top-3 covariance eigenvectors. An eigenvector's sign is
arbitrary, and the mean is over *signed* cosines, so the score — and through the rescaling,
the matching and A — changes with the signs. The signs belong to a layer (one set of three
eigenvectors serves every pair the layer is in), so a choice of signs is one of 2³ sign
patterns per layer, chosen jointly for every layer. Flipping all three vectors of a layer
leaves every |mean| unchanged, so each layer has 4 distinct patterns and the choices number
4^(L_student + L_teacher).

`sign_range` scores A for every choice (exactly, when there are at most `max_exact`; else for
`samples` seeded random choices, which bounds the range from inside), with the matching redone
for each: the rescaling, the assignment and the normalization over the matched pairs are those
of the reported A. Head pairs do not depend on the signs. The choice of the reported A (the
signs as used) and the pinned choice (each eigenvector's largest entry positive) are among
those scored, so the range always contains both.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_EXACT = 1 << 16
SAMPLES = 20_000
CLASSES = np.array([[1, *rest] for rest in itertools.product((1, -1), repeat=2)], dtype=np.float64)
"""The 4 sign patterns of a layer's three eigenvectors up to a flip of all three: [4, 3]."""


def sign_class(flips: np.ndarray) -> int:
    """The class (row of `CLASSES`) of a sign pattern [3] of ±1."""
    canonical = flips * flips[0]
    return int(np.flatnonzero((CLASSES == canonical).all(1))[0])


def _rescale(raw: np.ndarray, h_mean: float, h_std: float) -> np.ndarray:
    """`matching.authors_rescale` on a stack [K, Ls, Lt] of raw score matrices (float32 out,
    as there)."""
    pos = raw > 0
    count = np.maximum(pos.sum((1, 2), keepdims=True), 1)
    mean = (raw * pos).sum((1, 2), keepdims=True) / count
    std = np.sqrt((((raw - mean) * pos) ** 2).sum((1, 2), keepdims=True) / count)
    z = np.where(std > 0, (raw - mean) / np.where(std > 0, std, 1), 0.0)
    out = np.where(pos, z * h_std + h_mean, 0.0)
    top = out.max((1, 2), keepdims=True)
    out = np.where(top != 0, out / np.where(top != 0, top, 1), 0.0)
    return out.astype(np.float32).astype(np.float64)


def _assign(sim: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Matched (student, teacher) index arrays [K, m] for each matrix of [K, Ls, Lt]."""
    k, ls, lt = sim.shape
    if direction == "student_to_teacher":
        return np.broadcast_to(np.arange(ls), (k, ls)), sim.argmax(2)
    if direction == "teacher_to_student":
        return sim.argmax(1), np.broadcast_to(np.arange(lt), (k, lt))
    rows, cols = zip(*(linear_sum_assignment(-s) for s in sim))
    return np.array(rows), np.array(cols)


def _normalise(v: np.ndarray, how: str) -> np.ndarray:
    """`alignment.normalise` row by row of [K, n]."""
    if how == "sum":
        total = v.sum(1, keepdims=True)
        return np.where(total > 0, v / np.where(total > 0, total, 1), 0.0)
    lo, span = v.min(1, keepdims=True), np.ptp(v, 1, keepdims=True)
    return np.where(span > 0, (v - lo) / np.where(span > 0, span, 1), 0.0)


def _score(i_s: np.ndarray, i_t: np.ndarray, sim: np.ndarray, how: str) -> np.ndarray:
    return (sim * (1 - np.abs(_normalise(i_s, how) - _normalise(i_t, how)))).mean(1)


def _choices(n_layers: int, max_exact: int, samples: int, seed: int, keep: list[np.ndarray]):
    """Per-layer class indices [K, n_layers]: every choice, or `keep` and seeded samples."""
    if 4 ** n_layers <= max_exact:
        return np.array(list(itertools.product(range(4), repeat=n_layers)), dtype=np.int64), "exact"
    drawn = np.random.default_rng(seed).integers(0, 4, (samples, n_layers))
    return np.concatenate([np.array(keep, dtype=np.int64), drawn]), "sampled"


def sign_range(cos: np.ndarray, heads: tuple, mlp_influence: tuple, head_stats: tuple,
               rescale: bool = True, direction: str = "student_to_teacher", how: str = "sum",
               pinned: tuple | None = None, max_exact: int = MAX_EXACT, samples: int = SAMPLES,
               seed: int = 0) -> dict:
    """A (pooled and MLPs only) over the eigenvector sign choices (see the module docstring).

    cos: [Ls, Lt, 3, 3], the cosines between the student's and the teacher's directions as the
    reported A used them. heads: (I_student, I_teacher, similarity) of the scored head pairs
    (arrays, a double-counted pair twice). mlp_influence: (student [Ls], teacher [Lt]) MLP
    influence as A reads it. head_stats: (mean, sample std) of every head similarity, for the
    rescaling. pinned: per-layer sign patterns ([Ls, 3], [Lt, 3] of ±1) that turn the used
    directions into the pinned ones (None: they are the pinned ones).
    """
    ls, lt = cos.shape[:2]
    raw = np.abs(np.einsum("ak,ijkl,bl->ijab", CLASSES, cos, CLASSES)) / 9.0  # [Ls, Lt, 4, 4]
    used = np.zeros(ls + lt, dtype=np.int64)
    pin = used if pinned is None else np.array([sign_class(f) for f in (*pinned[0], *pinned[1])])
    combos, method = _choices(ls + lt, max_exact, samples, seed, [used, pin])
    cs, ct = combos[:, :ls], combos[:, ls:]
    r = raw[np.arange(ls)[None, :, None], np.arange(lt)[None, None, :], cs[:, :, None], ct[:, None, :]]
    sim = _rescale(r, *head_stats) if rescale else r.astype(np.float32).astype(np.float64)
    pi, pj = _assign(sim, direction)
    s_mlp, t_mlp = (np.asarray(x, dtype=np.float64) for x in mlp_influence)
    m_s, m_t = s_mlp[pi], t_mlp[pj]
    m_sim = np.take_along_axis(sim.reshape(len(sim), -1), pi * lt + pj, 1)
    h_s, h_t, h_sim = (np.broadcast_to(np.asarray(x, dtype=np.float64), (len(sim), len(heads[0])))
                       for x in heads)
    a = _score(np.concatenate([h_s, m_s], 1), np.concatenate([h_t, m_t], 1),
               np.concatenate([h_sim, m_sim], 1), how)
    a_mlp = _score(m_s, m_t, m_sim, how)
    at = {tuple(c): i for i, c in enumerate(combos[:2].tolist())} if method == "sampled" else None
    index = (lambda c: at[tuple(c)]) if at else (lambda c: int(np.ravel_multi_index(c, (4,) * (ls + lt))))
    u, p = index(used), index(pin)
    return {"A": [float(a.min()), float(a.max())], "A_mlp": [float(a_mlp.min()), float(a_mlp.max())],
            "A_quantiles_5_50_95": [float(q) for q in np.quantile(a, [0.05, 0.5, 0.95])],
            "A_as_used": float(a[u]), "A_pinned": float(a[p]), "A_mlp_as_used": float(a_mlp[u]),
            "A_mlp_pinned": float(a_mlp[p]), "method": method, "choices": int(len(combos)),
            "of": 4 ** (ls + lt), "seed": seed if method == "sampled" else None}
