import pytest
import torch

from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinyGPT2Spec, build_gpt2_student, layer_map


@pytest.fixture(scope="module")
def teacher(tokenizer):
    return TinyGPT2Spec(n_layer=4, n_head=4, n_embd=32).build(tokenizer, seed=1)


def test_distilgpt2_layer_choice():
    assert layer_map(12, 6, "every_k") == [0, 2, 4, 7, 9, 11]
    assert layer_map(4, 2, "first_k") == [0, 1]
    assert layer_map(4, 1, "every_k") == [0]


def test_every_k_copies_teacher_layers_exactly(teacher):
    student, prov = build_gpt2_student(teacher, CapacitySpec(depth=0.5))
    assert student.config.n_layer == 2 and prov["layer_map"] == {"0": 0, "1": 3}
    t_sd = teacher.state_dict()
    for name, value in student.state_dict().items():
        if name.startswith("transformer.h."):
            i = int(name.split(".")[2])
            src = name.replace(f"transformer.h.{i}.", f"transformer.h.{[0, 3][i]}.", 1)
        else:
            src = name
        assert torch.equal(value, t_sd[src]), name
    assert prov["tensors"]["transformer.h.1.mlp.c_fc.weight"] == {"from": "transformer.h.3.mlp.c_fc.weight"}


def test_narrow_student_slices_whole_heads(teacher):
    student, prov = build_gpt2_student(teacher, CapacitySpec(depth=0.5, width=0.5, heads=0.5))
    c = student.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_inner) == (2, 16, 2, 64)
    # same head size (8) → student heads 0,1 are teacher heads 0,1 restricted to 16 inputs
    t_qkv = teacher.transformer.h[3].attn.c_attn.weight  # [32, 96]: q | k | v, 4 heads of 8
    s_qkv = student.transformer.h[1].attn.c_attn.weight  # [16, 48]
    for block in range(3):  # q, k, v
        assert torch.equal(s_qkv[:, block * 16:(block + 1) * 16], t_qkv[:16, block * 32:block * 32 + 16])
    assert torch.equal(student.transformer.h[1].mlp.c_proj.weight, teacher.transformer.h[3].mlp.c_proj.weight[:64, :16])
    assert prov["tensors"]["transformer.h.1.attn.c_attn.weight"]["slice"] == [[[0, 16]], [[0, 16], [32, 48], [64, 80]]]


def test_random_init_copies_nothing(teacher):
    student, prov = build_gpt2_student(teacher, CapacitySpec(depth=0.5), init="random")
    assert set(prov["tensors"].values()) == {"random"}
    assert not torch.equal(student.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight)


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"depth": 1.2}, {"width": -0.5}, {"heads": 2}])
def test_impossible_capacity_is_refused(kwargs):
    with pytest.raises(KdmechError, match=r"outside \(0, 1\]"):
        CapacitySpec(**kwargs)


def test_indivisible_width_is_refused(teacher):
    with pytest.raises(KdmechError, match="not divisible"):
        build_gpt2_student(teacher, CapacitySpec(width=0.5, heads=0.75))
