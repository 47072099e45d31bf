"""The Llama family's runner (Llama, Mistral, Qwen2, Qwen3 with grouped-query attention)
against plain Hugging Face forward hooks and against the bridge reference.

The hooks never touch TransformerLens or kdmech's runner: a query head's output is its slice of
the input of `self_attn.o_proj` (head h at columns h·head_dim…), an MLP's output the output of
`mlp`, the final residual the input of `model.norm`; the value of KV group g is its slice of
`v_proj`'s output, which query heads g·(H/G)…(g+1)·(H/G)−1 read (transformers' repeat_kv).
"""

import pytest
import torch

from kdmech.analysis import Node, boot, corrupted_activations
from kdmech.analysis.ablation.contract import ResidualRunner, readout_at
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.ablation.reference import ablated_metric
from kdmech.analysis.probes import logit_attribution, successor_scores
from kdmech.models import TinySpec, tiny_spec
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.metric import task_metric

TYPES = ["llama", "mistral", "qwen2", "qwen3"]


def random_llama(tokenizer, model_type="llama", layers=3, seed=0, scale=0.3):
    """A random 32-wide Llama-layout model, 4 query heads in 2 KV groups, weights drawn wide
    enough that every component moves the logits."""
    model = tiny_spec("llama", TinySpec(n_layer=layers, n_head=4, n_embd=32, model_type=model_type)).build(
        tokenizer, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def hf_run(model, ids, hooks=()):
    """(final residual before model.norm [N, T, d], logits) of a plain forward with `hooks`
    ((module, pre, fn) triples) registered, 64 rows at a time as the reference batches."""
    seen, finals, logits = {}, [], []
    handles = [m.register_forward_pre_hook(fn) if pre else m.register_forward_hook(fn) for m, pre, fn in hooks]
    handles.append(model.model.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])))
    try:
        with torch.no_grad():
            for i in range(0, ids.shape[0], 64):
                logits.append(model(input_ids=ids[i:i + 64]).logits)
                finals.append(seen["x"])
    finally:
        for h in handles:
            h.remove()
    return torch.cat(finals), torch.cat(logits)


def mean_of(model, module, ids, pre: bool):
    """Mean over prompts of a module's input (pre) or output on `ids`."""
    seen = []
    fn = (lambda m, a: seen.append(a[0])) if pre else (lambda m, a, out: seen.append(out))
    hf_run(model, ids, [(module, pre, fn)])
    return torch.cat(seen).mean(0)


@pytest.mark.parametrize("model_type", TYPES)
def test_readout_is_the_hooked_forward_bit_for_bit(tokenizer, prompts, model_type):
    """Mean-ablating L1.H2 (KV group 1) and L2's MLP: the runner's final residual equals the
    hooked Hugging Face forward's exactly, and its LD the reference's within float rounding."""
    model = random_llama(tokenizer, model_type)
    layers = model.model.layers
    d_head = model.config.head_dim
    cols = slice(2 * d_head, 3 * d_head)
    mean_z = mean_of(model, layers[1].self_attn.o_proj, prompts.corrupted, pre=True)
    mean_mlp = mean_of(model, layers[2].mlp, prompts.corrupted, pre=False)

    def patch_z(m, a):
        z = a[0].clone()
        z[..., cols] = mean_z[..., cols]
        return (z,)

    final, logits = hf_run(model, prompts.clean, [(layers[1].self_attn.o_proj, True, patch_z),
                                                  (layers[2].mlp, False, lambda m, a, out: mean_mlp.expand_as(out))])
    bridged = boot(model, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    runner = engine.runner
    assert isinstance(runner, ResidualRunner) and type(runner).__name__ == "LlamaRunner"
    nodes = [Node(1, 2), Node(2)]
    got = runner.ablated_readout(nodes, prompts.positions, engine._z_new, engine._mlp_new)
    assert torch.equal(got, readout_at(final, prompts.positions))
    expected = task_metric(readout_at(logits, prompts.positions), prompts)
    assert torch.allclose(runner.metric(got, prompts), expected, atol=1e-5)
    assert not torch.allclose(expected, task_metric(readout_at(hf_run(model, prompts.clean)[1], prompts.positions),
                                                    prompts), atol=1e-3)  # the ablation did something


def test_bridge_head_outputs_are_the_o_proj_input(tokenizer, prompts):
    """Under GQA the bridge's hook_z holds one slot per query head, and it is o_proj's input."""
    model = random_llama(tokenizer, "qwen2", layers=2)
    seen = []
    hf_run(model, prompts.clean[:5], [(model.model.layers[0].self_attn.o_proj, True,
                                       lambda m, a: seen.append(a[0]))])
    _, cache = boot(model, tokenizer).bridge.run_with_cache(prompts.clean[:5])
    z = cache["blocks.0.attn.hook_z"]
    assert z.shape[2] == model.config.num_attention_heads == 2 * model.config.num_key_value_heads
    assert torch.equal(z.flatten(2), seen[0])


@pytest.mark.parametrize("kind", ["mean", "zero", "resample"])
def test_engine_equals_the_bridge_reference(tokenizer, prompts, kind):
    """Every single node and some sets, with and without a memory budget (row slices)."""
    model = random_llama(tokenizer, "qwen3", layers=3, seed=1)
    bridged = boot(model, tokenizer)
    source = corrupted_activations(bridged, prompts, keep_full=True)
    sets = [[n] for n in bridged.nodes] + [[Node(0, 1), Node(2), Node(2, 3)], [Node(1, 0), Node(1, 1), Node(1)]]
    refs = [ablated_metric(bridged, prompts, s, kind, source) for s in sets]
    for budget in (0, 7 * prompts.seq_len):
        engine = AblationEngine(bridged, prompts, kind, source, max_batch_tokens=budget)
        assert engine.runner is not None
        for nodes, got, ref in zip(sets, engine.metrics(sets, per_prompt=True), refs):
            assert torch.allclose(got, ref, atol=1e-5), (budget, nodes)


def test_direct_logit_attribution_adds_up_through_the_frozen_rmsnorm(tokenizer, prompts):
    """Heads, MLPs and embeddings through the final RMSNorm with its scale frozen sum to the LD
    (no centring, no bias); one head's share equals its o_proj slice computed by hand."""
    model = random_llama(tokenizer, "llama", layers=2, seed=2)
    bridged = boot(model, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    dla = logit_attribution(engine)
    total = sum(dla.per_node.values()) + dla.embeddings + dla.biases
    assert total == pytest.approx(dla.logit_diff, abs=1e-4)
    assert dla.biases == 0.0
    final, _ = hf_run(model, prompts.clean)
    zs = []
    hf_run(model, prompts.clean, [(model.model.layers[1].self_attn.o_proj, True, lambda m, a: zs.append(a[0]))])
    z = readout_at(zs[0], prompts.positions)[:, 8:16]  # L1.H1
    write = z @ model.model.layers[1].self_attn.o_proj.weight[:, 8:16].T
    at = readout_at(final, prompts.positions)
    rms = at.pow(2).mean(-1, keepdim=True).add(model.model.norm.variance_epsilon).sqrt()
    w_u = model.lm_head.weight
    direction = (w_u[prompts.answers] - w_u[prompts.wrong_answers]) * model.model.norm.weight
    assert dla.per_node["L1.H1"] == pytest.approx(float(((write / rms) * direction).sum(-1).mean()), abs=1e-5)


def test_successor_ov_reads_the_heads_kv_group(tokenizer):
    """The OV score of query head 3 (KV group 1) by hand: embedding → input RMSNorm → group 1's
    v_proj rows → head 3's o_proj columns → final norm → numeral logits."""
    model = random_llama(tokenizer, "mistral", layers=1, seed=3).requires_grad_(False)
    prompts = tokenize_prompts(NumeralTask(per_type=2, seed=0).prompts(), tokenizer)
    bridged = boot(model, tokenizer)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    scores = successor_scores(engine, tokenizer)
    values = list(range(1, 31))
    tok = torch.tensor([tokenizer.encode(f" {v}", add_special_tokens=False)[0] for v in values])
    block = model.model.layers[0]
    x = block.input_layernorm(model.model.embed_tokens.weight[tok])
    v = x @ block.self_attn.v_proj.weight[8:16].T  # group 1 (head_dim 8)
    logits = model.model.norm(v @ block.self_attn.o_proj.weight[:, 24:32].T) @ model.lm_head.weight[tok].T
    top = logits.argmax(-1)
    expected = sum(int(top[i]) == i + 1 for i in range(len(values) - 1)) / (len(values) - 1)
    assert scores["L0.H3"] == pytest.approx(expected)


def test_profile_ld_and_influence_equal_hooked_hf_forwards(tokenizer, prompts):
    """`profile` (the runner behind every analysis): the intact LD and every node's
    mean-ablation influence |100·(1 − LD_ablated / LD)| equal one hooked Hugging Face forward per
    node — a query head's slice of o_proj's input, or mlp's output, set to its corrupted mean."""
    from kdmech.analysis import profile

    model = random_llama(tokenizer, "qwen2", layers=2, seed=4)
    got = profile(model, tokenizer, prompts)
    assert got.engine.runner is not None

    def ld(logits):
        return task_metric(readout_at(logits, prompts.positions), prompts).mean().item()

    full = ld(hf_run(model, prompts.clean)[1])
    assert got.metric == pytest.approx(full, abs=1e-5)
    d_head = model.config.head_dim
    for l, layer in enumerate(model.model.layers):
        mean_z = mean_of(model, layer.self_attn.o_proj, prompts.corrupted, pre=True)
        for h in range(model.config.num_attention_heads):
            cols = slice(h * d_head, (h + 1) * d_head)

            def patch(m, a, cols=cols, mean_z=mean_z):
                z = a[0].clone()
                z[..., cols] = mean_z[..., cols]
                return (z,)

            ablated = ld(hf_run(model, prompts.clean, [(layer.self_attn.o_proj, True, patch)])[1])
            assert got.influence.influence[f"L{l}.H{h}"] == pytest.approx(abs(100 * (1 - ablated / full)), abs=1e-3)
        mean_mlp = mean_of(model, layer.mlp, prompts.corrupted, pre=False)
        ablated = ld(hf_run(model, prompts.clean, [(layer.mlp, False, lambda m, a, out, mean_mlp=mean_mlp: mean_mlp.expand_as(out))])[1])
        assert got.influence.influence[f"L{l}.MLP"] == pytest.approx(abs(100 * (1 - ablated / full)), abs=1e-3)


def test_patterns_are_per_query_head_as_hugging_face_computes_them(tokenizer, prompts):
    """The profile's mean attention patterns (what head matching compares) have one [T, T]
    pattern per query head, equal to Hugging Face's own attention weights averaged over prompts."""
    from kdmech.analysis import profile

    model = random_llama(tokenizer, "qwen3", layers=2, seed=5)
    got = profile(model, tokenizer, prompts).patterns
    with torch.no_grad():
        attentions = model(input_ids=prompts.clean, output_attentions=True).attentions
    expected = torch.stack([a.mean(0) for a in attentions])  # [L, n_heads, T, T]
    assert got.shape == expected.shape and got.shape[1] == model.config.num_attention_heads == 4
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got[:, 0], got[:, 1], atol=1e-3)  # heads of one KV group differ
