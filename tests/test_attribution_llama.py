"""Gradient attribution on the Llama family (grouped-query attention, RMSNorm, rotary positions;
docs/method.md §5.5) against independent computations with plain Hugging Face hooks.

- EAP node scores equal (a_corr − a_clean)·∂metric/∂a by plain autograd, one hook per node, a
  query head being its slice of `o_proj`'s input (llama, mistral, qwen2 with q/k/v biases, qwen3
  with q/k norms);
- GQA edges: every edge equals the one computed by plain hooks and `torch.autograd.grad` on an
  equivalent model without GQA (each KV group's k/v weights copied to each of its query heads,
  so every query head reads its own k and v): q edges one to one, a KV group's k (v) edge the
  sum of its query heads' k (v) edges;
- the verified circuit meets the pruning definition, its group edges included; scores do not
  depend on the memory budget.
"""


import pytest
import torch
from test_attribution import hooked_eap, solving
from test_llama_runner import random_llama

from kdmech.analysis import Node
from kdmech.analysis.attribution.discovery import CircuitFinder
from kdmech.analysis.attribution.paths import node_attribution
from kdmech.analysis.circuit import path_patching, retained_with_only
from kdmech.analysis.profile import profile
from hf_oracle import hooked, rms_norm


def engine_of(model, tokenizer, prompts, swap=True, **kw):
    """The mean-ablation engine on the prompts, answers swapped with `swap` (a random model's LD
    turns positive when that is the way it leans)."""
    return profile(model, tokenizer, solving(prompts) if swap else prompts, "mean", keep_corrupted=True,
                   **kw).engine


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_eap_nodes_equal_hooked_autograd_llama(tokenizer, prompts, model_type):
    model = random_llama(tokenizer, model_type, layers=2)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    layers = model.model.layers
    engine = engine_of(model, tokenizer, prompts)
    oracle = hooked_eap(model, engine.prompts, lambda l: layers[l].self_attn.o_proj, lambda l: layers[l].mlp,
                        2, 4, lambda ids: model(input_ids=ids).logits)
    scores = node_attribution(engine, "eap").by_node()
    assert scores.keys() == oracle.keys()
    for name in oracle:
        assert scores[name] == pytest.approx(oracle[name], rel=1e-4, abs=1e-5), name


def without_gqa(model):
    """The same function with one KV head per query head: k_proj/v_proj rows (and biases) of
    group g copied to each query head of the group."""
    cfg = model.config.to_dict()
    cfg["num_key_value_heads"] = model.config.num_attention_heads
    config = type(model.config).from_dict(cfg)
    config._attn_implementation = "eager"
    mha = type(model)(config).eval()
    per_group = model.config.num_attention_heads // model.config.num_key_value_heads
    d_head = model.config.head_dim
    state = {}
    for k, v in model.state_dict().items():
        if any(f"{p}_proj." in k for p in "kv"):
            v = v.unflatten(0, (-1, d_head)).repeat_interleave(per_group, 0).flatten(0, 1)
        state[k] = v
    mha.load_state_dict(state)
    return mha.requires_grad_(False)


def record(model, ids):
    zs, outs, handles = {}, {}, []
    for l, layer in enumerate(model.model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a, l=l: zs.__setitem__(l, a[0])))
        handles.append(layer.mlp.register_forward_hook(lambda m, a, out, l=l: outs.__setitem__(l, out)))
    with hooked(*handles), torch.no_grad():
        model(input_ids=ids)
    return zs, outs


def receiver_grad(model, prompts, receiver):
    """∂(mean LD)/∂x_r [N, T, d] where only receiver r = (layer, port, head) — port q, k, v of
    one head, "mlp" or "resid" — reads residual + x_r (x_r = 0)."""
    layer_i, port, head = receiver
    leaf = torch.zeros(*prompts.clean.shape, model.config.hidden_size, requires_grad=True)
    if port == "resid":
        handles = [model.model.norm.register_forward_pre_hook(lambda m, a: (a[0] + leaf,))]
    elif port == "mlp":
        norm = model.model.layers[layer_i].post_attention_layernorm
        handles = [norm.register_forward_pre_hook(lambda m, a: (a[0] + leaf,))]
    else:
        layer, seen = model.model.layers[layer_i], {}
        proj = getattr(layer.self_attn, f"{port}_proj")
        cols = slice(head * model.config.head_dim, (head + 1) * model.config.head_dim)

        def swap(m, a, out):
            x = rms_norm(layer.input_layernorm, seen["x"] + leaf)
            out = out.clone()
            out[..., cols] = (x @ proj.weight.T + (proj.bias if proj.bias is not None else 0))[..., cols]
            return out
        handles = [layer.input_layernorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
                   proj.register_forward_hook(swap)]
    rows = torch.arange(len(prompts))
    with hooked(*handles), torch.enable_grad():
        at = model(input_ids=prompts.clean).logits[rows, prompts.positions]
        (grad,) = torch.autograd.grad((at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean(), leaf)
    return grad


def hooked_edges(model, prompts):
    """{(sender name, (layer, port, head)): EAP edge score} on the mean-ablation path, every
    receiver of every head (q, k and v per head), every MLP and the final residual."""
    cfg = model.config
    d_head, n_layers, n_heads = cfg.head_dim, cfg.num_hidden_layers, cfg.num_attention_heads
    corr_z, corr_mlp = record(model, prompts.corrupted)
    clean_z, clean_mlp = record(model, prompts.clean)
    deltas = {}
    for l in range(n_layers):
        w_o = model.model.layers[l].self_attn.o_proj.weight
        for h in range(n_heads):
            cols = slice(h * d_head, (h + 1) * d_head)
            deltas[Node(l, h)] = (corr_z[l].mean(0)[..., cols] - clean_z[l][..., cols]) @ w_o[:, cols].T
        deltas[Node(l)] = corr_mlp[l].mean(0) - clean_mlp[l]
    receivers = [(l, p, h) for l in range(n_layers) for p in "qkv" for h in range(n_heads)]
    receivers += [(l, "mlp", None) for l in range(n_layers)] + [(1 << 30, "resid", None)]
    out = {}
    for r in receivers:
        grad = receiver_grad(model, prompts, r)
        for sender, delta in deltas.items():
            if sender.layer < r[0] or (sender.layer == r[0] and sender.is_head and r[1] == "mlp"):
                out[(sender.name, r)] = (delta * grad).sum().item()
    return out


def test_gqa_edges_equal_per_query_head_edges_summed_over_the_group(tokenizer, prompts):
    model = random_llama(tokenizer, "qwen2", layers=3)  # q/k/v biases: copied with their rows
    n_heads, per_group = model.config.num_attention_heads, 2
    assert model.config.num_key_value_heads * per_group == n_heads
    mha = without_gqa(model)
    with torch.no_grad():
        assert torch.allclose(mha(input_ids=prompts.clean).logits, model(input_ids=prompts.clean).logits, atol=1e-4)
    engine = engine_of(model, tokenizer, prompts)
    scores = node_attribution(engine, "eap", edges=True)
    oracle = hooked_edges(mha, engine.prompts)
    col = {r: j for j, r in enumerate(scores.receivers)}
    assert {r.name for r in scores.receivers if r.port == "k"} == {f"L{l}.G{g}.k" for l in range(3) for g in range(2)}
    checked = set()
    for i, sender in enumerate(scores.nodes):
        for r, j in col.items():
            key = (r.layer, r.port, r.index)
            heads = range(r.index * per_group, (r.index + 1) * per_group) if r.group else [r.index]
            parts = [(sender.name, (r.layer, r.port, h)) for h in heads]
            if parts[0] not in oracle:  # not upstream
                assert scores.edge_scores[i, j] == 0
                continue
            expected = sum(oracle[p] for p in parts)
            assert scores.edge_scores[i, j].item() == pytest.approx(expected, rel=1e-4, abs=1e-5), (sender, r)
            checked.add(key[1])
    assert checked == {"q", "k", "v", "mlp", "resid"}


def test_verified_llama_circuit_meets_the_pruning_definition(tokenizer, prompts):
    model = random_llama(tokenizer, "llama", layers=3)
    e = engine_of(model, tokenizer, prompts, swap=False)
    assert e.full_metric > 0
    c = CircuitFinder("eap-ig", ig_steps=3)(e, 0.2, edges=True)
    nodes = {Node.parse(n) for n in c.nodes}
    keep = 100 * 0.8
    assert retained_with_only(e, nodes) >= keep
    for n in nodes:
        assert retained_with_only(e, nodes - {n}) < keep
    assert c.edges_pruned and c.discovery["method"] == "eap-ig"
    exact = path_patching(e, nodes).scores
    assert all(exact[edge] < 0.8 * e.full_metric for edge in c.edges)
    budget = engine_of(model, tokenizer, prompts, swap=False, max_batch_tokens=5 * prompts.seq_len)
    assert len(budget.row_chunks) > 1
    whole, chunked = (node_attribution(x, "eap-ig", 2, edges=True) for x in (e, budget))
    assert torch.allclose(chunked.node_scores, whole.node_scores, atol=1e-5)
    assert torch.allclose(chunked.edge_scores, whole.edge_scores, atol=1e-5)


def test_bfloat16_attribution_follows_float32(tokenizer, prompts):
    """--analysis.attribution_dtype bfloat16: the passes run on a bf16 copy (the engine's model
    untouched), node and edge scores within bf16 rounding of the fp32 ones."""
    from kdmech.analysis.attribution.paths import engine_adapter

    model = random_llama(tokenizer, "llama", layers=2)
    e = engine_of(model, tokenizer, prompts)
    half = engine_adapter(e, "bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert next(e.bridged.model.parameters()).dtype == torch.float32
    full, low = (node_attribution(e, "eap-ig", 2, a, edges=True) for a in (engine_adapter(e), half))
    for a, b in ((low.node_scores, full.node_scores), (low.edge_scores, full.edge_scores)):
        assert torch.allclose(a, b, atol=0.03 * b.abs().max().item(), rtol=0.05)
