"""The distillation module: frozen teacher, optimizer contents, checkpoint contents."""

import torch

from kdmech.distill import DistillationModule, LossWeights
from kdmech.models import CapacitySpec, TinyGPT2Spec, build_gpt2_student


def make(tokenizer, width=1.0):
    teacher = TinyGPT2Spec(n_layer=2, n_head=2, n_embd=16).build(tokenizer, seed=0)
    student, prov = build_gpt2_student(teacher, CapacitySpec(depth=0.5, width=width, heads=1.0 if width == 1 else 0.5))
    return DistillationModule(teacher, {"s": student}, {"s": list(prov["layer_map"].values())}, LossWeights()), teacher


def test_teacher_is_frozen_and_outside_the_optimizer(tokenizer):
    module, teacher = make(tokenizer)
    module.train()
    assert not teacher.training and module.student.training
    assert not any(p.requires_grad for p in teacher.parameters())
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in teacher.parameters()}
    assert in_opt == {id(p) for p in module.student.parameters()}


def test_checkpoints_hold_no_teacher_weights(tokenizer):
    module, _ = make(tokenizer)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and not any(k.startswith("teacher.") for k in ckpt["state_dict"])


def test_total_loss_is_the_weighted_sum_and_only_the_student_gets_gradients(tokenizer):
    module, teacher = make(tokenizer)
    ids = torch.randint(0, len(tokenizer), (3, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    terms = module.losses(batch)
    w = module.weights
    expected = w.alpha_kl * terms["kl"].item() + w.alpha_ce * terms["ce"].item() + w.alpha_cos * terms["cos"].item()
    assert abs(terms["loss"].item() - expected) < 1e-5
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in module.student.parameters())


def test_narrow_student_trains_a_projection(tokenizer):
    module, _ = make(tokenizer, width=0.5)
    assert module.projection is not None and module.projection.in_features == 8
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(module.projection.weight) in in_opt


def test_shared_teacher_module_gives_each_student_its_own_loss(tokenizer):
    teacher = TinyGPT2Spec(n_layer=2, n_head=2, n_embd=16).build(tokenizer, seed=0)
    a, pa = build_gpt2_student(teacher, CapacitySpec(depth=0.5))
    b, pb = build_gpt2_student(teacher, CapacitySpec(depth=1.0, width=0.5, heads=0.5))
    shared = DistillationModule(teacher, {"a.x": a, "b": b}, {"a.x": [0], "b": [0, 1]})
    ids = torch.randint(0, len(tokenizer), (3, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    shared.log_dict = shared.log = lambda *args, **kw: None  # no trainer attached
    total = shared.training_step(batch, 0)
    alone_a = DistillationModule(teacher, {"a": a}, {"a": [0]}).losses(batch)["loss"]
    alone_b = DistillationModule(teacher, {"b": b}, {"b": [0, 1]})
    alone_b.projections["b"] = shared.projections["b"]
    assert torch.allclose(total, alone_a + alone_b.losses(batch)["loss"], atol=1e-5)
    assert shared.student_named("a.x") is a
    opt = shared.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in teacher.parameters()}
    assert id(shared.projections["b"].weight) in in_opt


def test_one_student_checkpoints_of_the_older_layout_still_load(tokenizer):
    """Older one-student checkpoints keyed `student.*`/`projection.*` load into the
    dict-of-students module; a checkpoint without the students' weights is refused."""
    import pytest

    from kdmech.errors import KdmechError

    module, _ = make(tokenizer, width=0.5)
    saved = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(saved)
    old = {k.replace("students.s.", "student.").replace("projections.s.", "projection."): v.clone() + 1
           for k, v in saved["state_dict"].items()}
    fresh, _ = make(tokenizer, width=0.5)
    ckpt = {"state_dict": old}
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    for k, v in saved["state_dict"].items():
        assert torch.equal(fresh.state_dict()[k], v + 1), k
    with pytest.raises(KdmechError, match="does not hold"):
        fresh.on_load_checkpoint({"state_dict": {}})
