"""Model families (kdmech/models/family.py): the registry, family_of on each family's models
(DistilBERT converted), capabilities declared rather than inferred, and the one ablation
interface: a GPT-2 engine without its fast path gets the same edges and residual probes, a
BERT is refused them with its own reason."""

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, BertForMaskedLM,
                          DistilBertConfig, DistilBertForMaskedLM, GPT2LMHeadModel)

from kdmech.analysis import boot, corrupted_activations
from kdmech.analysis.circuit import EDGES, discover, path_patching, prune_edges, prune_nodes
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.nodes import Node
from kdmech.analysis.probes import logit_attribution, successor_scores
from kdmech.analysis.ablation.runners import runner_for
from kdmech.distill.masking import BertMasker, make_masker
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, FAMILIES, TinySpec, build_student, family_of, get_family, tiny_spec
from kdmech.models.family import model_types
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.forms import prompt_form

SIZES = TinySpec(n_layer=2, n_head=4, n_embd=32, n_positions=64)


def one_line_error(call, *words):
    with pytest.raises(KdmechError) as e:
        call()
    text = str(e.value)
    assert "\n" not in text
    for w in words:
        assert w in text, (w, text)


def test_registry_and_its_one_line_errors():
    assert list(FAMILIES) == ["gpt2", "bert", "llama"]
    assert all(get_family(name).name == name for name in FAMILIES)
    one_line_error(lambda: get_family("gemma"), "'gemma'", "['gpt2', 'bert', 'llama']")
    one_line_error(lambda: tiny_spec("gpt3", SIZES), "'gpt3'", "['gpt2', 'bert', 'llama']")
    one_line_error(lambda: family_of(SimpleNamespace(model_type="t5")), "'t5'",
                   "['bert', 'distilbert', 'gpt2', 'llama', 'mistral', 'qwen2', 'qwen3']")
    one_line_error(lambda: prompt_form("seq2seq"), "'seq2seq'", "['causal', 'masked']")
    one_line_error(lambda: tiny_spec("gpt2", dataclasses.replace(SIZES, model_type="qwen2")),
                   "--tiny.model_type", "'qwen2'", "llama family", "gpt2")
    one_line_error(lambda: tiny_spec("llama", dataclasses.replace(SIZES, model_type="gemma")),
                   "'gemma'", "['llama', 'mistral', 'qwen2', 'qwen3']")
    one_line_error(lambda: tiny_spec("llama", dataclasses.replace(SIZES, n_kv_head=3)), "n_kv_head 3", "n_head 4")
    assert model_types("causal") == {"gpt2", "llama", "mistral", "qwen2", "qwen3"}
    assert model_types("masked") == {"bert", "distilbert"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_builds_models_it_recognises(name, tokenizer):
    """Each family's tiny teacher and a student built from it belong to that family."""
    family = get_family(name)
    teacher = tiny_spec(name, SIZES).build(tokenizer, seed=0)
    assert isinstance(tiny_spec(name, SIZES), family.tiny_teacher)
    assert family_of(teacher) is family and family_of(teacher.config) is family
    student, _ = build_student(teacher, CapacitySpec(depth=0.5))
    assert family_of(student) is family and family.convert(student) is student


def test_distilbert_is_bert_once_converted(tokenizer):
    cfg = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id)
    distil = DistilBertForMaskedLM(cfg).eval()
    bert = get_family("bert")
    assert family_of(distil) is bert
    converted = bert.convert(distil)
    assert isinstance(converted, BertForMaskedLM) and family_of(converted) is bert


def test_capabilities_are_declared(tokenizer):
    ids = torch.zeros(2, 5, dtype=torch.long)
    gpt2, bert = get_family("gpt2"), get_family("bert")
    assert (gpt2.kind, gpt2.cloze, gpt2.additive_residual) == ("causal", False, True)
    assert (bert.kind, bert.cloze, bert.additive_residual) == ("masked", True, False)
    assert gpt2.auto_model is AutoModelForCausalLM and bert.auto_model is AutoModelForMaskedLM
    assert gpt2.start_at_layer and not bert.start_at_layer
    assert bert.bridge_attention_mask and not gpt2.bridge_attention_mask
    assert "post-LayerNorm" in bert.residual_note
    llama = get_family("llama")
    assert (llama.kind, llama.cloze, llama.additive_residual, llama.start_at_layer) == ("causal", False, True, False)
    assert runner_for("llama", tiny_spec("llama", SIZES).build(tokenizer), ids) is not None
    assert make_masker(gpt2, tokenizer, 10) is None
    assert isinstance(make_masker(bert, tokenizer, len(tokenizer), seed=1), BertMasker)
    model = tiny_spec("gpt2", SIZES).build(tokenizer)
    assert runner_for("gpt2", model, ids) is not None
    assert runner_for("bert", tiny_spec("bert", SIZES).build(tokenizer), ids) is not None
    # a GPT-2 config outside the fast path: the engine falls back to the bridge reference
    config = copy.deepcopy(model.config)
    config.scale_attn_by_inverse_layer_idx = True
    odd = GPT2LMHeadModel(config)
    assert family_of(odd) is gpt2 and runner_for("gpt2", odd, ids) is None


@pytest.fixture(scope="module")
def teacher_engines(trained_teacher):
    from kdmech.models import load_causal_lm
    from kdmech.tasks.filtering import filter_by_teacher

    model, tok = load_causal_lm(trained_teacher[0])
    prompts = filter_by_teacher(model, tokenize_prompts(NumeralTask(per_type=16, seed=8).prompts(), tok))
    bridged = boot(model, tok)
    source = corrupted_activations(bridged, prompts)
    fast = AblationEngine(bridged, prompts, "mean", source)
    slow = AblationEngine(bridged, prompts, "mean", source, fast_path=False)
    return fast, slow, tok


def test_gpt2_without_its_fast_path_gets_the_same_edges(teacher_engines):
    """Edges are refused by capability, not by the fast path's absence: an engine built
    without it builds the runner for path patching on demand, and the numbers are identical."""
    fast, slow, _ = teacher_engines
    assert fast.runner is not None and slow.runner is None
    assert slow.residual_refusal(EDGES) == ""
    circuit, _ = prune_nodes(fast, 0.20)
    assert path_patching(slow, circuit) == path_patching(fast, circuit)  # bit-identical
    kept = prune_edges(fast, circuit, 0.20)
    assert kept and prune_edges(slow, circuit, 0.20) == kept
    a, b = discover(fast, 0.20), discover(slow, 0.20)
    assert b.edges_pruned and not b.edges_note
    assert (b.nodes, b.edges, b.edge_nodes) == (a.nodes, a.edges, a.edge_nodes)


def test_gpt2_without_its_fast_path_gets_the_residual_probes(teacher_engines):
    fast, slow, tok = teacher_engines
    assert successor_scores(slow, tok) == successor_scores(fast, tok)
    a, b = logit_attribution(fast), logit_attribution(slow)
    assert (b.per_node, b.embeddings, b.biases) == (a.per_node, a.embeddings, a.biases)
    assert b.logit_diff == pytest.approx(a.logit_diff, abs=1e-5)


def test_bert_is_refused_edges_naming_its_post_layernorm(tokenizer):
    bert = tiny_spec("bert", SIZES).build(tokenizer, seed=3).eval()
    prompts = tokenize_prompts(NumeralTask(per_type=6, seed=2, cloze=True).prompts(), tokenizer,
                               kind="masked")
    bridged = boot(bert, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    if engine.full_metric <= 0:  # a random model: make the task's LD positive to discover
        prompts = dataclasses.replace(prompts, answers=prompts.wrong_answers,
                                      wrong_answers=prompts.answers)
        engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    assert engine.runner is not None  # BERT's fast path for node ablations; edges still refused
    for call in (lambda: prune_edges(engine, {Node(0)}), lambda: path_patching(engine, {Node(0)})):
        one_line_error(call, "edge pruning (path patching) refused for the bert family",
                       "post-LayerNorm")
    circuit = discover(engine, 0.20)
    assert not circuit.edges_pruned and circuit.edges == []
    assert "bert family" in circuit.edges_note and "post-LayerNorm" in circuit.edges_note
    assert "edges not pruned (refused)" in circuit.summary or circuit.empty
