"""Edge pruning under grouped-query attention against a brute-force oracle (docs/method.md §5.2, §3.2).

The oracle hooks a trained tiny Llama's own modules (4 query heads in 2 KV groups) and runs one
full forward per edge; it uses no kdmech runner or engine code. A query head's output is its
slice of `o_proj`'s input; its q is its slice of `q_proj`'s output; a KV group's k and v are
the group's slices of `k_proj`/`v_proj`'s outputs (read by every query head of the group); an
MLP's input is `mlp`'s input, the RMSNorm of the residual after attention; the final residual
is the input of `model.norm`. RMSNorm is written out here: w · x / sqrt(mean(x²) + eps).
"""


import pytest
import torch

from kdmech.analysis import Node, boot, corrupted_activations
from kdmech.analysis.circuit import path_patching, prune_edges, prune_nodes
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.models import load_causal_lm
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import filter_by_teacher
from hf_oracle import hooked, mean_ld, rms_norm

THRESHOLD = 0.20


def record(model, ids):
    """Every layer's o_proj input (z) and MLP output as the model runs (after earlier hooks)."""
    zs, outs, handles = {}, {}, []
    for l, layer in enumerate(model.model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, a, l=l: zs.__setitem__(l, a[0].detach().clone())))
        handles.append(layer.mlp.register_forward_hook(
            lambda m, a, out, l=l: outs.__setitem__(l, out.detach().clone())))
    with hooked(*handles), torch.no_grad():
        model(input_ids=ids)
    return zs, outs


def ablate(model, circuit, new_z, new_mlp, d_head):
    """Hooks replacing every head and MLP outside `circuit` by its corrupted mean."""
    handles = []
    for l, layer in enumerate(model.model.layers):
        cols = [c for h in range(model.config.num_attention_heads) if (l, h) not in circuit
                for c in range(h * d_head, (h + 1) * d_head)]

        def patch_z(m, a, l=l, cols=cols):
            z = a[0].clone()
            z[:, :, cols] = new_z[l][..., cols]
            return (z,)

        if cols:
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(patch_z))
        if (l, None) not in circuit:
            handles.append(layer.mlp.register_forward_hook(lambda m, a, out, l=l: new_mlp[l].expand_as(out).clone()))
    return handles


def receive(model, receiver, delta, d_head):
    """Hooks letting only `receiver` ("L1.H2.q", "L1.G0.k", "L1.MLP", "resid_final") see `delta`."""
    if receiver == "resid_final":
        return [model.model.norm.register_forward_pre_hook(lambda m, a: (a[0] + delta,))]
    parts = receiver.split(".")
    layer = model.model.layers[int(parts[0][1:])]
    seen = {}
    if parts[1] == "MLP":
        norm = layer.post_attention_layernorm
        grab = norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
        feed = layer.mlp.register_forward_pre_hook(lambda m, a: (rms_norm(norm, seen["x"] + delta),))
        return [grab, feed]
    proj = getattr(layer.self_attn, f"{parts[2]}_proj")
    index = int(parts[1][1:])
    cols = slice(index * d_head, (index + 1) * d_head)

    def swap(m, a, out):
        x = rms_norm(layer.input_layernorm, seen["x"] + delta)
        out = out.clone()
        out[..., cols] = (x @ proj.weight.T + (proj.bias if proj.bias is not None else 0))[..., cols]
        return out

    grab = layer.input_layernorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    return [grab, proj.register_forward_hook(swap)]


def oracle_path_patching(model, prompts, circuit_names):
    """(baseline LD, {(sender, receiver): LD}) by brute force under mean ablation; senders get
    their paired corrupted output; k/v receivers are the KV groups of the circuit's heads."""
    circuit = {(n.layer, n.head) for n in map(Node.parse, circuit_names)}
    cfg = model.config
    d_head, per_group = cfg.head_dim, cfg.num_attention_heads // cfg.num_key_value_heads
    corrupted_z, corrupted_mlp = record(model, prompts.corrupted)
    new_z = {l: z.mean(0) for l, z in corrupted_z.items()}
    new_mlp = {l: o.mean(0) for l, o in corrupted_mlp.items()}
    key = lambda x: (x[0], x[1] if x[1] is not None else 1 << 30)  # noqa: E731
    heads = sorted((x for x in circuit if x[1] is not None), key=key)
    groups = sorted({(l, h // per_group) for l, h in heads})
    mlps = sorted(l for l, h in circuit if h is None)
    scores = {}
    with hooked(*ablate(model, circuit, new_z, new_mlp, d_head)):
        circuit_z, circuit_mlp = record(model, prompts.clean)
        baseline = mean_ld(model, prompts)
        for sl, sh in sorted(circuit, key=key):
            if sh is None:
                sender, delta = f"L{sl}.MLP", corrupted_mlp[sl] - circuit_mlp[sl]
            else:
                cols = slice(sh * d_head, (sh + 1) * d_head)
                w_o = model.model.layers[sl].self_attn.o_proj.weight[:, cols]
                sender = f"L{sl}.H{sh}"
                delta = (corrupted_z[sl][..., cols] - circuit_z[sl][..., cols]) @ w_o.T
            receivers = [f"L{l}.H{h}.q" for l, h in heads if l > sl]
            receivers += [f"L{l}.G{g}.{p}" for l, g in groups if l > sl for p in "kv"]
            receivers += [f"L{l}.MLP" for l in mlps if l > sl or (l == sl and sh is not None)]
            for receiver in receivers + ["resid_final"]:
                with hooked(*receive(model, receiver, delta, d_head)):
                    scores[(sender, receiver)] = mean_ld(model, prompts)
    return baseline, scores


@pytest.fixture(scope="module")
def teacher(trained_llama_teacher):
    model, tok = load_causal_lm(trained_llama_teacher)
    prompts = filter_by_teacher(model, tokenize_prompts(NumeralTask(per_type=12, seed=8).prompts(), tok))
    return model.eval().requires_grad_(False), tok, prompts


def test_gqa_edges_equal_the_brute_force_oracle(teacher):
    """The trained teacher's node circuit widened to a head in each KV group of every later
    layer, so that q receivers and shared k/v group receivers are all exercised."""
    model, tok, prompts = teacher
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    bridged = boot(model, tok)
    engine = AblationEngine(bridged, prompts, "mean", corrupted_activations(bridged, prompts))
    circuit, _ = prune_nodes(engine, THRESHOLD)
    n_layers = model.config.num_hidden_layers
    circuit |= {Node(l, h) for l in range(1, n_layers) for h in (0, 3)}
    assert len(circuit) >= 5, circuit
    names = [n.name for n in sorted(circuit)]

    scored = path_patching(engine, circuit)
    baseline, expected = oracle_path_patching(model, prompts, names)
    assert scored.baseline == pytest.approx(baseline, abs=1e-4)
    got = {(e.sender.name, e.receiver.name): ld for e, ld in scored.scores.items()}
    assert set(got) == set(expected)
    assert {r.rsplit(".", 2)[1][0] for _, r in expected if r.count(".") == 2} == {"H", "G"}
    for edge, ld in expected.items():
        assert got[edge] == pytest.approx(ld, abs=1e-4), edge
    limit = (1 - THRESHOLD) * engine.full_metric
    kept = {tuple(e.to_json()) for e in prune_edges(engine, circuit, THRESHOLD)}
    assert kept == {e for e, ld in expected.items() if ld < limit}
    assert kept, "the circuit keeps some edges"
