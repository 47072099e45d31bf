"""Importance ranking (models/importance.py) against independent computations, and students
built from it; every_k students are unchanged."""

import torch

from kdmech.models import CapacitySpec, TinyGPT2Spec, build_gpt2_student
from kdmech.models.importance import Importance, block_importance, importance


def _teacher(tokenizer):
    return TinyGPT2Spec(n_layer=4, n_head=4, n_embd=32).build(tokenizer, seed=1).eval()


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


def test_neuron_scores_equal_plain_hook_on_activation(tokenizer):
    model = _teacher(tokenizer)
    ids = torch.randint(0, model.config.vocab_size, (5, 8))
    seen = []
    hook = model.transformer.h[2].mlp.act.register_forward_hook(lambda m, a, out: seen.append(out.abs().mean((0, 1))))
    with torch.no_grad():
        model(ids)
    hook.remove()
    imp = importance(model, ids)
    assert torch.allclose(torch.tensor(imp.neurons[2]), seen[0], atol=1e-6)


def test_planted_block_is_kept_and_provenance_round_trips(tokenizer):
    model = _teacher(tokenizer)
    with torch.no_grad():  # blocks 0, 1, 3 near identity: their writes scaled to ~0
        for i in (0, 1, 3):
            model.transformer.h[i].attn.c_proj.weight.mul_(1e-4)
            model.transformer.h[i].mlp.c_proj.weight.mul_(1e-4)
            model.transformer.h[i].attn.c_proj.bias.zero_()
            model.transformer.h[i].mlp.c_proj.bias.zero_()
    ids = torch.randint(0, model.config.vocab_size, (6, 10))
    imp = importance(model, ids, data="random ids")
    student, prov = build_gpt2_student(model, CapacitySpec(depth=0.25, width=0.5, heads=0.5), "importance",
                                       importance=imp)
    assert prov["layer_map"] == {"0": 2}
    assert Importance.from_json(prov["importance"]) == imp
    assert prov["tensors"]["transformer.h.0.mlp.c_fc.weight"]["from"] == "transformer.h.2.mlp.c_fc.weight"


def test_every_k_student_unchanged(tokenizer):
    model = _teacher(tokenizer)
    student, _ = build_gpt2_student(model, CapacitySpec(depth=0.5, width=0.5, heads=0.5), "every_k")
    t = model.transformer  # today's rule, written out: first heads/dims of teacher layers 0 and 3
    assert torch.equal(student.transformer.h[1].attn.c_attn.weight,
                       torch.cat([t.h[3].attn.c_attn.weight[:16, k * 32:k * 32 + 16] for k in range(3)], 1))
    assert torch.equal(student.transformer.h[0].mlp.c_fc.weight, t.h[0].mlp.c_fc.weight[:16, :64])
