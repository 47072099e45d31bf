"""Real Llama-family checkpoints — `meta-llama/Llama-3.1-8B` → `nvidia/Llama-3.1-Minitron-4B-Depth-Base`,
`Qwen/Qwen2.5-*`, `Qwen/Qwen3-*` — load by hub name through the same code as a folder
(`models/loading.py`); there is no hub here, so these tests write `save_pretrained` folders of
tiny configs carrying the real configs' features: grouped-query attention 4:1, `rope_scaling`
of type llama3 (rope_theta 500,000), untied embeddings (Llama 3.1); q/k/v biases and tied
embeddings (Qwen2.5); per-head q/k RMSNorm and a head_dim other than hidden / heads (Qwen3).
The Qwen folders carry Qwen's own BPE (conftest's `qwen_tokenizer`), whose digits split from
the space before them (docs/method.md §2.8). Independent checks: the loaded config's features,
Hugging Face's own forward (hooked by hand, no kdmech code), and A = 1 for a model against itself.
"""

import json

import pytest
import torch
import transformers as tf

from kdmech.analysis import Node, boot
from kdmech.analysis.ablation.contract import readout_at
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.commands.analyze import AnalyzeOptions, analyze
from kdmech.models import CapacitySpec, build_llama_student, load_lm
from kdmech.tasks import check_same_tokenization, get_task

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
"""Llama 3.1's rope scaling, its original context shrunk below the prompts' length so it acts."""
QUICK = AnalyzeOptions(per_type=4, filter_prompts=False, min_prompts=0, min_teacher_top1=0.0,
                       allow_weak_teacher=True)


def _ids(tok):
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def llama31(tok, layers=4):
    return tf.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                          num_attention_heads=8, num_key_value_heads=2, head_dim=8, rope_theta=500000.0,
                          rope_scaling=LLAMA3_ROPE, max_position_embeddings=64, tie_word_embeddings=False, **_ids(tok))


def qwen25(tok, layers=2):
    return tf.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                          tie_word_embeddings=True, **_ids(tok))


def qwen3(tok, layers=2):
    return tf.Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                          tie_word_embeddings=True, **_ids(tok))


def save(folder, config, tok, seed=0):
    """A random model of `config` (weights drawn wide enough to move the logits) and `tok`."""
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2 and p.shape[0] < 1000:  # not the (large, Qwen) embedding
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer, qwen_tokenizer):
    root = tmp_path_factory.mktemp("hub")
    return {"llama3.1": save(root / "llama3.1", llama31(tokenizer), tokenizer),
            "qwen2.5": save(root / "qwen2.5", qwen25(qwen_tokenizer), qwen_tokenizer),
            "qwen3": save(root / "qwen3", qwen3(qwen_tokenizer), qwen_tokenizer)}


def hf_final_residual(model, ids, hooks=()):
    """The input of model.norm in a plain forward (64 rows at a time, as the reference batches)."""
    seen, out = {}, []
    handles = [m.register_forward_pre_hook(fn) for m, fn in hooks]
    handles.append(model.model.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])))
    try:
        with torch.no_grad():
            for i in range(0, ids.shape[0], 64):
                model(input_ids=ids[i:i + 64])
                out.append(seen["x"])
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out)


@pytest.mark.parametrize("name", ["llama3.1", "qwen2.5", "qwen3"])
def test_a_folder_loads_with_its_features_and_the_runner_is_its_forward(folders, name):
    """The loaded model keeps the real config's features, and the runner's read-out — intact and
    with query head 5 (or 1) zeroed — is Hugging Face's own forward bit for bit."""
    model, tok, kind = load_lm(folders[name])
    c = model.config
    assert kind == "causal" and model.dtype == torch.float32
    assert c.num_attention_heads // c.num_key_value_heads == (4 if name == "llama3.1" else 4)
    if name == "llama3.1":
        assert c.rope_parameters["rope_type"] == "llama3" and not c.tie_word_embeddings
        assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    if name == "qwen2.5":
        assert model.model.layers[0].self_attn.q_proj.bias is not None and c.tie_word_embeddings
    if name == "qwen3":
        assert hasattr(model.model.layers[0].self_attn, "q_norm") and c.head_dim * c.num_attention_heads != c.hidden_size
    prompts = check_same_tokenization(tok, tok, get_task("numerals", per_type=4, tokenizer=tok).prompts())
    bridged = boot(model, tok)
    engine = AblationEngine(bridged, prompts, "zero", None)
    runner = engine.runner
    assert type(runner).__name__ == "LlamaRunner"
    assert torch.equal(runner.clean_readout(prompts.positions), readout_at(hf_final_residual(model, prompts.clean),
                                                                          prompts.positions))
    head, d = (5 if name == "llama3.1" else 1), getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads

    def zero_head(m, a):
        z = a[0].clone()
        z[..., head * d:(head + 1) * d] = 0
        return (z,)

    expected = hf_final_residual(model, prompts.clean, [(model.model.layers[1].self_attn.o_proj, zero_head)])
    got = runner.ablated_readout([Node(1, head)], prompts.positions, engine._z_new, engine._mlp_new)
    assert torch.equal(got, readout_at(expected, prompts.positions))


def test_llama31_to_a_minitron_depth_student_by_folder(folders, tmp_path):
    """`kdmech analyze --teacher <Llama 3.1 folder> --student <its depth-pruned student>`: every
    query head of both is a node, the student has half the layers and the teacher's KV groups."""
    teacher, tok, _ = load_lm(folders["llama3.1"])
    student, _ = build_llama_student(teacher, CapacitySpec(depth=0.5))
    student.save_pretrained(tmp_path / "minitron")
    tok.save_pretrained(tmp_path / "minitron")
    r = analyze(str(folders["llama3.1"]), str(tmp_path / "minitron"), tmp_path / "out",
                analyses=["influence", "matching"], analysis=QUICK, progress=False, wandb="disabled").to_json()
    assert student.config.num_key_value_heads == 2 and student.config.rope_parameters["rope_type"] == "llama3"
    assert len(r["influence"]["teacher"]) == 4 * 9 and len(r["influence"]["student"]) == 2 * 9
    assert {m["student"] for m in r["matching"]["pairs"]} == {f"L{l}.H{h}" for l in range(2) for h in range(8)} | {
        "L0.MLP", "L1.MLP"}
    assert json.loads((tmp_path / "out" / "analysis.json").read_text())["options"]["dtype"] == "float32"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_qwen3_analysed_against_itself_scores_one(folders, tmp_path, dtype):
    """Qwen3 with Qwen's BPE, against itself: A = 1, in float32 and in bf16 (both loaded in bf16;
    the read-out and scores in float32); the prompts end in Qwen's space token 220."""
    folder = str(folders["qwen3"])
    r = analyze(folder, folder, tmp_path / "out", analyses=["influence", "matching"],
                analysis=AnalyzeOptions(**{**QUICK.__dict__, "dtype": dtype}), progress=False,
                wandb="disabled").to_json()
    assert r["alignment"]["A"] == pytest.approx(1.0, abs=1e-6)
    assert r["options"]["dtype"] == dtype
    prompts = json.loads((tmp_path / "out" / "prompts.json").read_text())
    assert {ids[-1] for ids in prompts["clean_ids"]} == {220}
    assert all(a.isdigit() for a in prompts["answer_text"])
    if dtype == "bfloat16":
        model, _, _ = load_lm(folder, dtype)
        assert model.dtype == torch.bfloat16
        r32 = analyze(folder, folder, tmp_path / "out32", analyses=["influence", "matching"], analysis=QUICK,
                      progress=False, wandb="disabled").to_json()
        ld, ld32 = r["logit_diff"]["teacher"], r32["logit_diff"]["teacher"]
        assert isinstance(ld, float) and ld == pytest.approx(ld32, rel=0.05, abs=0.05)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_a_saved_word_tokenizer_loads_as_it_was_saved(tokenizer, tmp_path, model_type):
    """A tiny Qwen teacher's folder holds kdmech's word tokenizer: loading it must not swap in
    Qwen's own tokenizer class, whose pre-tokenizer splits "10" into "1" "0"."""
    from kdmech.models import TinySpec, tiny_spec

    tiny_spec("llama", TinySpec(n_layer=1, n_head=2, n_embd=16, model_type=model_type)).build(tokenizer).save_pretrained(
        tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded, _ = load_lm(tmp_path)
    text = "Van done in 9. Hat done in 10. Sun done in"
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.tokenize(" 10.") == ["10", "."]
