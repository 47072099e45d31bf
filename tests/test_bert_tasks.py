"""BERT pieces around the pipeline: cloze task forms, family dispatch in loading and student
building, the teacher's masked-LM loss, and one-line refusals for pairs and tasks BERT lacks."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, TinyBertSpec, TinyGPT2Spec, build_student, load_lm
from kdmech.tasks import IOITask, check_same_tokenization, get_task, tokenize_prompts


def test_ioi_cloze_reads_the_indirect_object_at_mask(tokenizer):
    texts = IOITask(n=20, seed=1, cloze=True).prompts()
    plain = IOITask(n=20, seed=1).prompts()
    assert texts.task == "ioi-cloze"
    for c, p, a in zip(texts.clean, plain.clean, texts.answers):
        assert c == p + " [MASK]" and p.endswith(" to")
        assert a.strip() in p.split(" to")[0].replace(",", "").split()  # IO is named earlier
    prompts = tokenize_prompts(texts, tokenizer, "masked")
    rows = torch.arange(len(prompts))
    assert (prompts.clean[rows, prompts.positions] == tokenizer.mask_token_id).all()
    assert (prompts.positions == prompts.clean.shape[1] - 2).all()  # just before [SEP]
    assert prompts.answers.tolist() == [tokenizer.convert_tokens_to_ids(a.strip()) for a in texts.answers]


def test_cloze_prompts_are_checked_against_both_tokenizers(tokenizer):
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab["5"], vocab["99"] = vocab["99"], vocab["5"]  # the student's "5" is another id
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                    **{k: getattr(tokenizer, k) for k in (
                                        "pad_token", "unk_token", "bos_token", "mask_token", "cls_token", "sep_token")})
    texts = get_task("numerals", cloze=True, per_type=4).prompts()
    check_same_tokenization(tokenizer, tokenizer, texts, "masked")  # one tokenizer agrees with itself
    with pytest.raises(KdmechError, match=r"tokenize prompt '.*\[MASK\]' differently"):
        check_same_tokenization(tokenizer, other, texts, "masked")


def test_tasks_without_a_cloze_form_are_refused():
    with pytest.raises(KdmechError, match="'greater-than' has no cloze"):
        get_task("greater-than", cloze=True)
    assert get_task("numerals", cloze=True).prompts().answers[0] == " 5"  # docs/method.md §2.3: renumbered 1..4
    answers = set(get_task("numerals-any-start", cloze=True).prompts().answers)
    assert answers == {f" {n + 4}" for n in range(1, 9)}


def test_load_lm_and_build_student_follow_the_family(tmp_path, tokenizer):
    TinyGPT2Spec(n_layer=2, n_head=2, n_embd=16).build(tokenizer).save_pretrained(tmp_path / "g")
    TinyBertSpec(n_layer=2, n_head=2, n_embd=16).build(tokenizer).save_pretrained(tmp_path / "b")
    for folder in ("g", "b"):
        tokenizer.save_pretrained(tmp_path / folder)
    g, _, g_kind = load_lm(tmp_path / "g")
    b, _, b_kind = load_lm(tmp_path / "b")
    assert (g_kind, b_kind) == ("causal", "masked") and isinstance(b, BertForMaskedLM)
    s, prov = build_student(b, CapacitySpec(depth=0.5))
    assert isinstance(s, BertForMaskedLM) and s.config.num_hidden_layers == 1 and prov["layer_map"] == {"0": 0}
    assert build_student(g, CapacitySpec(depth=0.5))[0].config.model_type == "gpt2"


def test_analyze_refuses_mixed_and_cloze_less_pairs(tmp_path, tokenizer):
    from kdmech.commands.analyze import analyze

    TinyGPT2Spec(n_layer=2, n_head=2, n_embd=16).build(tokenizer).save_pretrained(tmp_path / "g")
    TinyBertSpec(n_layer=2, n_head=2, n_embd=16).build(tokenizer).save_pretrained(tmp_path / "b")
    for folder in ("g", "b"):
        tokenizer.save_pretrained(tmp_path / folder)
    with pytest.raises(KdmechError, match="a pair must be one family"):
        analyze(str(tmp_path / "b"), str(tmp_path / "g"), tmp_path / "out", progress=False)
    with pytest.raises(KdmechError, match="no cloze"):
        analyze(str(tmp_path / "b"), str(tmp_path / "b"), tmp_path / "out", task="greater-than", progress=False)
    assert not (tmp_path / "out").exists()


def test_teacher_mlm_loss_is_cross_entropy_at_the_chosen_positions(tokenizer):
    from kdmech.distill import BertMasker, MaskedLMModule
    from kdmech.distill.masking import mask_tokens

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32)).eval()
    module = MaskedLMModule(model, BertMasker(tokenizer, len(tokenizer), seed=3))
    ids = torch.randint(10, 150, (6, 10))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids[0, -3:] = tokenizer.pad_token_id  # padding is never chosen
    attn = (ids != tokenizer.pad_token_id).long()
    loss = module._loss({"input_ids": ids, "attention_mask": attn}).item()
    special = torch.isin(ids, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]))
    corrupted, labels = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer),
                                    torch.Generator().manual_seed(3))
    assert not (labels[special] != -100).any()
    with torch.no_grad():
        logits = model(input_ids=corrupted, attention_mask=attn).logits
    chosen = (labels != -100).nonzero().tolist()
    assert chosen
    by_hand = sum(-F.log_softmax(logits[b, i], -1)[labels[b, i]].item() for b, i in chosen) / len(chosen)
    assert loss == pytest.approx(by_hand, rel=1e-5)
