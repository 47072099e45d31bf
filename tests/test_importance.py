"""Importance ranking (models/importance.py) against independent computations — a plain
forward of the model with a block taken out, hand-written hooks on the activations — and the
students built from it: a planted teacher keeps its working block, a Llama student keeps whole
KV groups (the teacher with the other groups' heads silenced), the scores round-trip through
provenance; every_k, first_k and random students are unchanged bit for bit."""

import copy
import hashlib
import json

import pytest
import torch

from kdmech.models import (CapacitySpec, TinyBertSpec, TinyGPT2Spec, TinyLlamaSpec, build_gpt2_student,
                           build_student)
from kdmech.models.importance import Importance, block_importance, importance

SPECS = {"gpt2": TinyGPT2Spec(n_layer=4, n_head=4, n_embd=32),
         "bert": TinyBertSpec(n_layer=4, n_head=4, n_embd=32),
         "llama": TinyLlamaSpec(n_layer=4, n_head=4, n_embd=32, n_kv_head=2)}


def _teacher(tokenizer, family="gpt2"):
    return SPECS[family].build(tokenizer, seed=1).eval()


def _bypassed_final(model, ids, skip):
    """Plain forward of GPT-2 with block `skip` left out: embeddings, the other blocks, ln_f."""
    t = model.transformer
    h = t.wte(ids) + t.wpe(torch.arange(ids.shape[1]))
    for i, block in enumerate(t.h):
        if i != skip:
            h = block(h)
    return t.ln_f(h)


def test_layer_ranking_equals_plain_bypassed_forward(tokenizer):
    model = _teacher(tokenizer)
    ids = torch.randint(0, model.config.vocab_size, (6, 10))
    with torch.no_grad():
        ref = _bypassed_final(model, ids, skip=-1)
        expected = [float(((_bypassed_final(model, ids, i) - ref) ** 2).sum(-1).mean() / (ref ** 2).sum(-1).mean())
                    for i in range(4)]
    got = block_importance(model, ids, torch.ones_like(ids))
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-7)


def _without_block(model, family, skip):
    """A copy of `model` whose block list no longer holds block `skip` (a plain forward then
    bypasses it; no hook involved)."""
    m = copy.deepcopy(model)
    blocks = {"gpt2": lambda: m.transformer.h, "bert": lambda: m.bert.encoder.layer, "llama": lambda: m.model.layers}
    kept = [b for i, b in enumerate(blocks[family]()) if i != skip]
    if family == "gpt2":
        m.transformer.h = torch.nn.ModuleList(kept)
    elif family == "bert":
        m.bert.encoder.layer = torch.nn.ModuleList(kept)
    else:
        m.model.layers = torch.nn.ModuleList(kept)
        m.config.layer_types = None
    return m


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_block_scores_equal_forwards_of_the_model_without_each_block(tokenizer, family, metric):
    model = _teacher(tokenizer, family)
    ids = torch.randint(5, model.config.vocab_size, (5, 9))
    mask = torch.ones_like(ids)
    mask[3:, 6:] = 0  # padded rows: only the real tokens count

    def final(m):
        with torch.no_grad():
            return m.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]

    ref = final(model)
    expected = []
    for i in range(4):
        h = final(_without_block(model, family, i))
        expected.append(float((1 - torch.nn.functional.cosine_similarity(h, ref, dim=-1)).mean()) if metric == "cosine"
                        else float(((h - ref) ** 2).sum(-1).mean() / (ref ** 2).sum(-1).mean()))
    got = block_importance(model, ids, mask, metric, batch_size=2)
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-7)


def test_width_scores_equal_plain_hooks_in_any_batch_size(tokenizer):
    model = _teacher(tokenizer)
    ids = torch.randint(0, model.config.vocab_size, (5, 8))
    seen = {}
    t = model.transformer
    hooks = [t.h[2].mlp.act.register_forward_hook(lambda m, a, out: seen.setdefault("act", out)),
             t.h[1].attn.c_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("z", a[0])),
             *[ln.register_forward_hook(lambda m, a, out, k=k: seen.setdefault(k, out))
               for k, ln in enumerate([n for b in t.h for n in (b.ln_1, b.ln_2)] + [t.ln_f])]]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    imp = importance(model, ids)
    assert torch.allclose(torch.tensor(imp.neurons[2]), seen["act"].abs().mean((0, 1)), atol=1e-6)
    per_dim = seen["z"].abs().mean((0, 1)).reshape(4, 8)  # [head, dim]: c_proj reads the heads concatenated
    assert torch.allclose(torch.tensor(imp.head_dims[1]), per_dim, atol=1e-6)
    assert torch.allclose(torch.tensor(imp.heads[1]), per_dim.mean(-1), atol=1e-6)
    channels = sum(seen[k].abs().mean((0, 1)) for k in range(9))
    assert torch.allclose(torch.tensor(imp.channels), channels, atol=1e-5)
    batched = importance(model, ids, batch_size=2)
    for field in ("blocks", "heads", "neurons", "channels"):
        assert torch.allclose(torch.tensor(getattr(batched, field)), torch.tensor(getattr(imp, field)), atol=1e-5)


def _near_identity(blocks, keep: int, attn_out, mlp_out):
    """Every block but `keep` writes ~nothing into the residual stream (pre-norm models)."""
    with torch.no_grad():
        for i, b in enumerate(blocks):
            if i != keep:
                for lin in (attn_out(b), mlp_out(b)):
                    lin.weight.mul_(1e-4)
                    if lin.bias is not None:
                        lin.bias.zero_()


def test_planted_block_is_kept_and_provenance_round_trips(tokenizer):
    model = _teacher(tokenizer)
    _near_identity(model.transformer.h, 2, lambda b: b.attn.c_proj, lambda b: b.mlp.c_proj)
    ids = torch.randint(0, model.config.vocab_size, (6, 10))
    imp = importance(model, ids, data="random ids")
    student, prov = build_gpt2_student(model, CapacitySpec(depth=0.25, width=0.5, heads=0.5), "importance",
                                       importance=imp)
    assert prov["layer_map"] == {"0": 2}
    assert Importance.from_json(json.loads(json.dumps(prov["importance"]))) == imp  # as provenance.json holds it
    assert prov["tensors"]["transformer.h.0.mlp.c_fc.weight"]["from"] == "transformer.h.2.mlp.c_fc.weight"
    assert prov["heads_kept"] == {"0": imp.kept_heads(2, 2)}


def test_planted_llama_block_is_kept(tokenizer):
    model = _teacher(tokenizer, "llama")
    _near_identity(model.model.layers, 1, lambda b: b.self_attn.o_proj, lambda b: b.mlp.down_proj)
    ids = torch.randint(5, model.config.vocab_size, (6, 10))
    imp = importance(model, ids)
    _, prov = build_student(model, CapacitySpec(depth=0.25), "importance", importance=imp)
    assert imp.layer_ranking()[0] == 1 and prov["layer_map"] == {"0": 1}


def test_llama_importance_student_keeps_whole_kv_groups(tokenizer):
    """Half the heads at full width and depth: the student equals the teacher with the query
    heads of the less important KV group silenced (zeros into o_proj) — the group chosen from
    a hand-written hook's mean |o_proj input|, summed over each group's query heads."""
    model = _teacher(tokenizer, "llama")
    ids = torch.randint(5, model.config.vocab_size, (4, 7))
    seen = {}
    hooks = [b.self_attn.o_proj.register_forward_pre_hook(lambda m, a, i=i: seen.setdefault(i, a[0]))
             for i, b in enumerate(model.model.layers)]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    group_score = {i: seen[i].abs().mean((0, 1)).reshape(2, 2 * 8).mean(-1) for i in seen}  # 2 groups of 2 heads of 8
    keep_group = {i: int(s.argmax()) for i, s in group_score.items()}
    imp = importance(model, ids)
    student, prov = build_student(model, CapacitySpec(depth=1.0, heads=0.5), "importance", importance=imp)
    assert prov["heads_kept"] == {str(i): [2 * g, 2 * g + 1] for i, g in keep_group.items()}

    def silence(i):
        def hook(m, a):
            z = a[0].clone()
            drop = 1 - keep_group[i]
            z[..., drop * 16:(drop + 1) * 16] = 0
            return (z,)
        return hook
    hooks = [b.self_attn.o_proj.register_forward_pre_hook(silence(i)) for i, b in enumerate(model.model.layers)]
    with torch.no_grad():
        expected = model(ids).logits
    for h in hooks:
        h.remove()
    with torch.no_grad():
        got = student(ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


def _digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# Digests of the students kdmech built before init importance existed (commit 2caba1e, the
# same script): weights (sha256 over the sorted state dict) and the provenance of every tensor.
TEACHERS = {"gpt2": "1d8bc16b9bf948ef", "bert": "38853ec3c9b75542", "llama": "12e80774125ea5bb"}
GOLDEN = {
    ("gpt2", "every_k", "d0.5-w1-h1"): ("54a83e50d298f98c", "ffc5b31881c4f619"),
    ("gpt2", "every_k", "d0.75-w0.5-h0.5"): ("896253aed336c687", "3f6d8addde31c087"),
    ("gpt2", "first_k", "d0.5-w1-h1"): ("2a35999ca27bb7ce", "b798bc5081a2a42c"),
    ("gpt2", "first_k", "d0.75-w0.5-h0.5"): ("5c971e50800804f6", "ef49a4229419bfd3"),
    ("gpt2", "random", "d0.75-w0.5-h0.5"): ("a0bac88ca298e482", "e1455d21f21f3f2b"),
    ("bert", "every_k", "d0.5-w1-h1"): ("56045e24a253e4fe", "a136a93da52305f5"),
    ("bert", "every_k", "d0.75-w0.5-h0.5"): ("9490f9c17e08310f", "be50fa27c52d80d7"),
    ("bert", "first_k", "d0.5-w1-h1"): ("fb44004585d6ef80", "6db507b8f23a0e40"),
    ("bert", "first_k", "d0.75-w0.5-h0.5"): ("dc64fa2697a3c08d", "afd1277d0b2aef88"),
    ("bert", "random", "d0.75-w0.5-h0.5"): ("2675694456a4e973", "851f306bf47299c0"),
    ("llama", "every_k", "d0.5-w1-h1"): ("22adddf483486cc5", "9021d81decae45d6"),
    ("llama", "every_k", "d0.75-w0.5-h0.5"): ("541411f123c44fb2", "64e9da12721fbf0d"),
    ("llama", "first_k", "d0.5-w1-h1"): ("2f0160b4e1ae8e1c", "6b2677ddcacb96a2"),
    ("llama", "first_k", "d0.75-w0.5-h0.5"): ("85fc00dc856e4e16", "86931fde6389a029"),
    ("llama", "random", "d0.75-w0.5-h0.5"): ("62ed550389c01f13", "97e44ec957f39f48"),
}


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_every_k_first_k_and_random_students_unchanged_bit_for_bit(tokenizer, family):
    teacher = _teacher(tokenizer, family)
    assert _digest(teacher) == TEACHERS[family]  # else the teacher moved, not the builder
    for (fam, init, cap), (weights, tensors) in GOLDEN.items():
        if fam != family:
            continue
        depth, width, heads = (float(x[1:]) for x in cap.split("-"))
        student, prov = build_student(teacher, CapacitySpec(depth=depth, width=width, heads=heads), init, seed=3)
        assert _digest(student) == weights, (init, cap)
        assert hashlib.sha256(json.dumps(prov["tensors"], sort_keys=True).encode()).hexdigest()[:16] == tensors


def test_every_k_student_is_the_written_out_rule(tokenizer):
    model = _teacher(tokenizer)
    student, _ = build_gpt2_student(model, CapacitySpec(depth=0.5, width=0.5, heads=0.5), "every_k")
    t = model.transformer  # the rule, written out: first heads/dims of teacher layers 0 and 3
    assert torch.equal(student.transformer.h[1].attn.c_attn.weight,
                       torch.cat([t.h[3].attn.c_attn.weight[:16, k * 32:k * 32 + 16] for k in range(3)], 1))
    assert torch.equal(student.transformer.h[0].mlp.c_fc.weight, t.h[0].mlp.c_fc.weight[:16, :64])
