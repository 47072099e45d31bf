"""Students of a Llama-layout teacher (models/llama_student.py): whole KV groups, provenance,
the refusal of ratios that split a group, and distillation with the hidden cosine and a
projection. Checked against the teacher's own forward with Hugging Face hooks."""

import dataclasses

import pytest
import torch

from kdmech.distill import DistillationModule, LossWeights
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinySpec, build_student, tiny_spec

SIZES = TinySpec(n_layer=4, n_head=4, n_embd=32, n_kv_head=2)


def teacher_of(tokenizer, model_type="llama", **kw):
    return tiny_spec("llama", dataclasses.replace(SIZES, model_type=model_type, **kw)).build(tokenizer, seed=1).eval()


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_a_student_of_half_the_heads_is_the_teacher_without_its_second_kv_group(tokenizer, model_type):
    """heads 0.5 keeps KV group 0 with query heads 0 and 1: the student's logits equal the
    teacher's with heads 2 and 3 zeroed at o_proj's input (the group kept whole, its q heads
    reading their own k/v); Qwen2's biases and Qwen3's q/k norms come along."""
    teacher = teacher_of(tokenizer, model_type)
    student, prov = build_student(teacher, CapacitySpec(depth=1.0, width=1.0, heads=0.5))
    c = student.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (2, 1, 8)
    assert type(student) is type(teacher)
    d_head = teacher.config.head_dim

    def drop_group_1(m, a):
        z = a[0].clone()
        z[..., 2 * d_head:] = 0
        return (z,)

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(drop_group_1) for layer in teacher.model.layers]
    ids = torch.randint(10, 60, (3, 11))
    with torch.no_grad():
        expected = teacher(input_ids=ids).logits
    for h in handles:
        h.remove()
    with torch.no_grad():
        got = student(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    k = prov["tensors"]["model.layers.2.self_attn.k_proj.weight"]
    assert k == {"from": "model.layers.2.self_attn.k_proj.weight", "slice": [[[0, 8]], [[0, 32]]]}
    if model_type == "qwen2":
        assert prov["tensors"]["model.layers.0.self_attn.v_proj.bias"]["slice"] == [[[0, 8]]]
    if model_type == "qwen3":
        assert prov["tensors"]["model.layers.0.self_attn.q_norm.weight"] == {
            "from": "model.layers.0.self_attn.q_norm.weight"}


def test_depth_width_and_random_students(tokenizer):
    teacher = teacher_of(tokenizer)
    student, prov = build_student(teacher, CapacitySpec(depth=0.5, width=0.5))
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (2, 16, teacher.config.intermediate_size // 2)
    assert prov["layer_map"] == {"0": 0, "1": 3} and prov["shape"]["n_kv_head"] == 2
    t = dict(teacher.named_parameters())
    s = dict(student.named_parameters())
    assert torch.equal(s["model.layers.1.mlp.down_proj.weight"],
                       t["model.layers.3.mlp.down_proj.weight"][:16, :c.intermediate_size])
    assert torch.equal(s["lm_head.weight"], t["lm_head.weight"][:, :16])
    assert not torch.equal(s["lm_head.weight"], s["model.embed_tokens.weight"])  # untied
    first, _ = build_student(teacher, CapacitySpec(depth=0.5), init="first_k")
    assert torch.equal(dict(first.named_parameters())["model.layers.1.self_attn.q_proj.weight"],
                       t["model.layers.1.self_attn.q_proj.weight"])
    _, rand = build_student(teacher, CapacitySpec(depth=0.5), init="random")
    assert set(rand["tensors"].values()) == {"random"}


def test_a_ratio_splitting_a_kv_group_is_refused_in_one_line(tokenizer):
    teacher = teacher_of(tokenizer)
    with pytest.raises(KdmechError) as e:
        build_student(teacher, CapacitySpec(heads=0.75))
    text = str(e.value)
    assert "\n" not in text and "0.75" in text and "splits a KV group of 2 query heads" in text


def test_kd_with_hidden_cosine_and_a_projection(tokenizer):
    """A narrower student: the module adds a projection to the teacher's width, the loss is
    the weighted sum of its terms and only the student and the projection get gradients."""
    teacher = teacher_of(tokenizer, "qwen3")
    student, prov = build_student(teacher, CapacitySpec(depth=0.5, width=0.5))
    module = DistillationModule(teacher, {"s": student}, {"s": list(prov["layer_map"].values())}, LossWeights())
    assert module.projection is not None and module.projection.in_features == 16
    ids = torch.randint(10, 60, (3, 9))
    terms = module.losses({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    w = module.weights
    expected = w.alpha_kl * terms["kl"] + w.alpha_ce * terms["ce"] + w.alpha_cos * terms["cos"]
    assert torch.allclose(terms["loss"], expected) and 0 < terms["cos"].item() < 2
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert module.projection.weight.grad is not None and student.lm_head.weight.grad is not None
