import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from kdmech.distill.losses import kd_kl, masked_lm_ce
from kdmech.distill.masking import mask_tokens
from kdmech.models import CapacitySpec
from kdmech.models.bert_student import build_bert_student


@pytest.fixture(scope="module")
def bert_teacher(tokenizer):
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=64)).eval()


def test_every_k_copies_bert_layers_exactly(bert_teacher):
    student, prov = build_bert_student(bert_teacher, CapacitySpec(depth=0.5))
    assert prov["layer_map"] == {"0": 0, "1": 3}
    t = bert_teacher.state_dict()
    for name, value in student.state_dict().items():
        src = name.replace("encoder.layer.1.", "encoder.layer.3.") if "encoder.layer.1." in name else name
        assert torch.equal(value, t[src]), name


def test_narrow_bert_student_slices_whole_heads(bert_teacher):
    student, prov = build_bert_student(bert_teacher, CapacitySpec(depth=0.5, width=0.5, heads=0.5))
    q_t = bert_teacher.bert.encoder.layer[3].attention.self.query.weight  # [32 out, 32 in]
    q_s = student.bert.encoder.layer[1].attention.self.query.weight       # [16, 16]
    assert torch.equal(q_s, q_t[:16, :16])  # heads 0, 1 of size 8, first 16 inputs
    o_t = bert_teacher.bert.encoder.layer[3].attention.output.dense.weight
    assert torch.equal(student.bert.encoder.layer[1].attention.output.dense.weight, o_t[:16, :16])
    assert prov["tensors"]["bert.encoder.layer.1.intermediate.dense.weight"]["slice"] == [[[0, 32]], [[0, 16]]]


def test_masking_follows_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (400, 50), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    out, labels = mask_tokens(ids, special, mask_id=3, vocab_size=200, generator=g)
    chosen = labels != -100
    assert not chosen[special].any()
    assert chosen.float().mean().item() == pytest.approx(0.15 * 48 / 50, abs=0.01)
    assert (out[chosen] == 3).float().mean().item() == pytest.approx(0.8, abs=0.02)
    kept = (out[chosen] == ids[chosen]).float().mean().item()
    assert kept == pytest.approx(0.1, abs=0.02)  # plus random draws that hit the same token, rarely
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(out[~chosen], ids[~chosen])


def test_masked_kd_terms_by_hand():
    """MLM KD: T²·KL only at masked positions, CE against the original tokens there."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 6, 9, generator=g), torch.randn(2, 6, 9, generator=g)
    labels = torch.full((2, 6), -100)
    labels[0, 2], labels[1, 4] = 5, 1
    masked = labels != -100
    T = 2.0
    expected = []
    for b, i in zip(*masked.nonzero(as_tuple=True)):
        ps = F.log_softmax(s[b, i] / T, -1).numpy()
        pt = F.log_softmax(t[b, i] / T, -1).numpy()
        expected.append((np.exp(pt) * (pt - ps)).sum())
    assert kd_kl(s, t, masked, T).item() == pytest.approx(T * T * np.mean(expected), rel=1e-5)
    ce = masked_lm_ce(s, labels).item()
    by_hand = np.mean([-F.log_softmax(s[0, 2], -1)[5].item(), -F.log_softmax(s[1, 4], -1)[1].item()])
    assert ce == pytest.approx(by_hand, rel=1e-6)


def test_masked_distillation_terms_match_a_hand_computation(bert_teacher, tokenizer):
    from kdmech.distill import BertMasker, DistillationModule

    student, prov = build_bert_student(bert_teacher, CapacitySpec(depth=0.5))
    special = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    module = DistillationModule(bert_teacher, {"s": student}, {"s": [0, 3]},
                                masker=BertMasker(tokenizer, len(tokenizer), seed=5))
    ids = torch.randint(10, 200, (4, 12))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    attn = torch.ones_like(ids)
    terms = module.losses({"input_ids": ids, "attention_mask": attn})
    # the same corruption, drawn again from the same seed, then everything by hand
    corrupted, labels = mask_tokens(ids, torch.isin(ids, torch.tensor(special)), tokenizer.mask_token_id,
                                    len(tokenizer), torch.Generator().manual_seed(5))
    with torch.no_grad():
        t = bert_teacher(input_ids=corrupted, attention_mask=attn, output_hidden_states=True)
        s = student(input_ids=corrupted, attention_mask=attn, output_hidden_states=True)
    chosen = labels != -100
    assert chosen.any()
    T = 2.0
    pt, ps = F.log_softmax(t.logits[chosen] / T, -1), F.log_softmax(s.logits[chosen] / T, -1)
    kl = (pt.exp() * (pt - ps)).sum(-1).mean().item() * T * T
    ce = np.mean([-F.log_softmax(s.logits[b, i], -1)[labels[b, i]].item() for b, i in chosen.nonzero()])
    cos = np.mean([(1 - F.cosine_similarity(s.hidden_states[k + 1], t.hidden_states[j + 1], dim=-1)).mean().item()
                   for k, j in enumerate([0, 3])])
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-4)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-4)
    assert terms["cos"].item() == pytest.approx(cos, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(5 * kl + 2 * ce + cos, rel=1e-4)


def test_masked_corpus_is_wrapped_in_cls_and_sep(tokenizer):
    from kdmech.distill.data import corpus_dataset

    data = corpus_dataset(tokenizer, 20, seed=0, kind="masked")
    for row in data:
        ids, attn = row["input_ids"], row["attention_mask"]
        n = int(attn.sum())
        assert ids[0] == tokenizer.cls_token_id and ids[n - 1] == tokenizer.sep_token_id
        assert (ids[n:] == tokenizer.pad_token_id).all()
    causal = corpus_dataset(tokenizer, 5, seed=0)
    assert all(row["input_ids"][0] == tokenizer.bos_token_id for row in causal)


def test_shared_teacher_module_masks_once_for_all_bert_students(bert_teacher, tokenizer):
    from kdmech.distill import BertMasker, DistillationModule

    a, _ = build_bert_student(bert_teacher, CapacitySpec(depth=0.5))
    b, _ = build_bert_student(bert_teacher, CapacitySpec(depth=0.25))
    masker = lambda: BertMasker(tokenizer, len(tokenizer), seed=9)  # noqa: E731
    shared = DistillationModule(bert_teacher, {"a": a, "b": b}, {"a": [0, 3], "b": [3]}, masker=masker())
    shared.log_dict = shared.log = lambda *args, **kw: None  # no trainer attached
    ids = torch.randint(10, 200, (4, 12))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    total = shared.training_step(batch, 0)
    # each student alone, with a masker drawing the same corruption
    alone = [DistillationModule(bert_teacher, {"s": s}, {"s": m}, masker=masker()).losses(batch)["loss"]
             for s, m in ((a, [0, 3]), (b, [3]))]
    assert torch.allclose(total, alone[0] + alone[1], atol=1e-5)
