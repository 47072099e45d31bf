"""A capacity in parameters (`--capacity.params`, models/param_budget.py): the shape the rule
picks, checked against students really built and counted (every parameter, embeddings
included, tied ones once), and the one-line refusals."""

import pytest

from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinyGPT2Spec, TinyLlamaSpec, build_student, family_of
from kdmech.models.param_budget import params_capacity


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _built(teacher, depth, width) -> int:
    student, _ = build_student(teacher, CapacitySpec(depth=depth, width=width, heads=1.0), "every_k")
    return _count(student)


@pytest.mark.parametrize("spec", [TinyGPT2Spec(n_layer=4, n_head=4, n_embd=32),
                                  TinyLlamaSpec(n_layer=4, n_head=4, n_embd=32, n_kv_head=2)])
@pytest.mark.parametrize("fraction", [0.9, 0.6, 0.3])
def test_the_rule_keeps_heads_shrinks_width_first_then_depth(tokenizer, spec, fraction):
    teacher = spec.build(tokenizer, seed=0).eval()
    total, L, d = _count(teacher), teacher.config.num_hidden_layers, teacher.config.hidden_size
    step = 1 if spec.n_kv_head else teacher.config.num_attention_heads
    chosen, line = params_capacity(teacher, CapacitySpec(params=fraction), family_of(teacher))
    assert chosen.params == fraction and chosen.heads == 1.0
    layers, width = round(chosen.depth * L), round(chosen.width * d)
    got = _built(teacher, chosen.depth, chosen.width)
    assert got <= fraction * total  # at most the fraction, counted on the student itself
    assert f"({got / total:.4f}, embeddings counted)" in line and f"{layers} of {L} layers" in line
    if width + step <= d:  # one step wider at the same depth would exceed it
        assert _built(teacher, chosen.depth, (width + step) / d) > fraction * total
    if layers < L:  # fewer layers only because half the width with one more layer exceeds it
        assert chosen.width * d >= d / 2
        assert _built(teacher, (layers + 1) / L, (step * -(-d // 2 // step)) / d) > fraction * total
    else:
        assert width >= d / 2


def test_a_fraction_below_the_smallest_student_is_refused_in_one_line(tokenizer):
    teacher = TinyGPT2Spec(n_layer=4, n_head=4, n_embd=32).build(tokenizer, seed=0)
    with pytest.raises(KdmechError, match=r"capacity params 0.01 is below .* accepted: 0\.\d+ to 1") as e:
        params_capacity(teacher, CapacitySpec(params=0.01), family_of(teacher))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [dict(params=0.0), dict(params=1.5), dict(rounds=0), dict(rounds=1.5)])
def test_bad_params_and_rounds_are_refused(bad):
    with pytest.raises(KdmechError):
        CapacitySpec(**bad)


def test_a_capacity_in_parameters_is_named_by_its_fraction():
    assert CapacitySpec(params=0.5).name == "p0.5" and CapacitySpec(depth=0.25).name == "d0.25-w1-h1"
