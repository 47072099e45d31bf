"""Mechanism probes (docs/method.md §10), for pre-LayerNorm GPT-2 models.

- Similar-member detection: attention from the prediction token to earlier sequence members,
  per head. Members are the positions where clean and corrupted prompts differ (the items the
  corruption replaces), so the probe needs no task-specific parsing.
- Successor score: each numeral token's embedding, through the layer's ln_1, one head's OV
  circuit, the final LayerNorm and the unembedding; the score is the fraction of n whose top
  logit among the numeral tokens is n + 1.
- Direct logit attribution at the prediction position onto W_U[correct] − W_U[wrong] with the
  final LayerNorm's scale frozen at its clean value: every component's share, which add up
  (with embeddings and biases) to the LD exactly. Per token, the norm of each MLP's write.
- First-token divergence: per position, similarity of matched teacher and student MLP outputs
  (mean cosine over prompts at equal width, linear CKA across prompts otherwise).

The successor score and direct logit attribution read the residual stream as a sum of writes:
they run where the model's family declares it additive (`ModelFamily.additive_residual`), on
the engine's fast-path runner, and are refused with the family's reason elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.matching import Match, linear_cka
from kdmech.analysis.nodes import Node
from kdmech.analysis.profile import ModelProfile
from kdmech.errors import KdmechError
from kdmech.tasks.split_digits import numeral_text


def member_positions(engine: AblationEngine) -> list[int]:
    p = engine.prompts
    return (p.clean != p.corrupted).any(0).nonzero().flatten().tolist()


def similar_member_scores(profile: ModelProfile) -> dict[str, float]:
    """Mean attention mass from the prediction position to the sequence members, per head."""
    members = member_positions(profile.engine)
    pos = int(profile.engine.prompts.positions[0])
    mass = profile.patterns[:, :, pos, members].sum(-1)  # [L, H]
    return {f"L{l}.H{h}": float(mass[l, h]) for l in range(mass.shape[0]) for h in range(mass.shape[1])}


def similar_member_from_items(profile: ModelProfile) -> dict[str, float]:
    """Mean attention mass from each sequence member (after the first) to the earlier members,
    per head: whether a head links members of the sequence to one another."""
    members = member_positions(profile.engine)
    if len(members) < 2:
        return {}
    mass = torch.stack([profile.patterns[:, :, q, members[:i]].sum(-1)
                        for i, q in enumerate(members) if i > 0]).mean(0)  # [L, H]
    return {f"L{l}.H{h}": float(mass[l, h]) for l in range(mass.shape[0]) for h in range(mass.shape[1])}


@torch.no_grad()
def successor_scores(engine: AblationEngine, tokenizer, values=range(1, 31)) -> dict[str, float]:
    runner = engine.residual_runner("the successor probe")
    # " v", or the bare "v" where the tokenizer splits the space off (what such a model predicts)
    ids = [tokenizer.encode(numeral_text(tokenizer, v), add_special_tokens=False) for v in values]
    usable = [(v, i[0]) for v, i in zip(values, ids) if len(i) == 1 and i[0] != tokenizer.unk_token_id]
    if len(usable) < 3:
        raise KdmechError("the successor probe needs at least 3 single-token numerals")
    vals = [v for v, _ in usable]
    tok = torch.tensor([t for _, t in usable], device=engine.prompts.device)
    emb = runner.embed_rows(tok)  # [n, d]
    w_u = runner.unembed_rows(tok)  # [n, d]: numeral tokens only
    targets = {v: vals.index(v + 1) for v in vals if v + 1 in vals}
    scores = {}
    for l in range(runner.n_layers):
        for h in range(runner.n_heads):
            logits = runner.final_norm(runner.ov(l, h, emb)) @ w_u.T
            top = logits.argmax(-1)
            hits = [int(top[vals.index(v)]) == j for v, j in targets.items()]
            scores[f"L{l}.H{h}"] = sum(hits) / len(hits)
    return scores


@dataclass(frozen=True)
class LogitAttribution:
    per_node: dict[str, float]
    """Mean share of the LD at the prediction position, per head and MLP."""
    embeddings: float
    biases: float
    logit_diff: float
    """The LD itself; per_node + embeddings + biases add up to it."""
    mlp_write_norm: dict[str, list[float]]
    """Per MLP, the mean norm of its output at each position."""

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def logit_attribution(engine: AblationEngine) -> LogitAttribution:
    runner = engine.residual_runner("direct logit attribution")
    p = engine.prompts
    if p.metric != "logit_diff":
        raise KdmechError(f"direct logit attribution splits a logit difference; task {p.task!r} "
                          f"uses the {p.metric!r} metric")
    rows = torch.arange(len(p), device=p.device)
    pos = p.positions
    final = runner.resid_final[rows, pos]  # [N, d]
    normalise, weight = runner.frozen_final_norm(final)  # the final norm's scale frozen
    diff = runner.unembed_rows(p.answers) - runner.unembed_rows(p.wrong_answers)
    direction = diff * weight  # [N, d]

    def share(x: torch.Tensor) -> float:
        """Mean over prompts of the LD share of a residual write x [N, d]."""
        return float((normalise(x).float() * direction.float()).sum(-1).mean())  # float32 under bf16

    per_node, mlp_norms, biases = {}, {}, 0.0
    for l in range(runner.n_layers):
        z = runner.z[l][rows, pos]
        for h in range(runner.n_heads):
            per_node[f"L{l}.H{h}"] = share(runner.head_write(l, h, z))
        bias = runner.attn_out_bias(l)
        if bias is not None:
            biases += share(bias.expand(len(p), -1))
        nxt = runner.resid_pre[l + 1] if l + 1 < runner.n_layers else runner.resid_final
        mlp_out = nxt - runner.resid_mid[l]
        per_node[f"L{l}.MLP"] = share(mlp_out[rows, pos])
        mlp_norms[f"L{l}.MLP"] = mlp_out.norm(dim=-1).mean(0).tolist()
    embeddings = share(runner.resid_pre[0][rows, pos])
    final_bias = runner.final_norm_bias()
    if final_bias is not None:
        biases += float((final_bias * diff).sum(-1).mean())
    return LogitAttribution(per_node, embeddings, biases, engine.full_metric, mlp_norms)


def mlp_write_norms(profile: ModelProfile) -> dict[str, list[float]]:
    """Per MLP, the mean norm (over prompts) of its output at each position: which tokens an
    MLP serves. Read from the MLP outputs themselves, so it holds for post-LayerNorm models
    too (there it is the write before the block's residual add and LayerNorm)."""
    n, t = profile.engine.prompts.clean.shape
    norms = profile.mlp_out.view(profile.mlp_out.shape[0], n, t, -1).norm(dim=-1).mean(1)
    return {f"L{l}.MLP": norms[l].tolist() for l in range(norms.shape[0])}


def first_token_divergence(teacher: ModelProfile, student: ModelProfile,
                           matches: list[Match]) -> dict[str, dict]:
    """Per matched MLP pair, the similarity of their outputs at each position."""
    n, t = teacher.engine.prompts.clean.shape
    out = {}
    for m in matches:
        if not m.student.endswith(".MLP"):
            continue
        s = student.mlp_out[Node.parse(m.student).layer].view(n, t, -1)
        te = teacher.mlp_out[Node.parse(m.teacher).layer].view(n, t, -1)
        if s.shape[-1] == te.shape[-1]:
            sims = torch.nn.functional.cosine_similarity(s, te, dim=-1).mean(0).tolist()
            how = "cosine"
        else:
            sims = [linear_cka(s[:, i], te[:, i]) for i in range(t)]
            how = "cka"
        out[f"{m.student}->{m.teacher}"] = {"similarity": sims, "method": how}
    return out
