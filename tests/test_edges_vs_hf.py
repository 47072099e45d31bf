"""Edge pruning (path patching on the node circuit, docs/method.md §5.2) against a brute-force oracle.

The oracle hooks Hugging Face GPT-2's own modules and runs one full forward per edge; it uses
no kdmech runner or engine code (kdmech only supplies the prompts and the node circuit). A
head's output before W_O is the input of `attn.c_proj` (head h at columns h·d_head…); its q, k
and v are columns of `attn.c_attn`'s output ([q | k | v], heads concatenated in each); an MLP's
input is `mlp`'s input, i.e. ln_2 of the residual after attention; the final residual is the
input of `ln_f`.
"""


import pytest
import torch
import torch.nn.functional as F

from kdmech.analysis import Node, boot, corrupted_activations
from kdmech.analysis.circuit import path_patching, prune_edges, prune_nodes, retained_with_only
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.models import load_causal_lm
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import filter_by_teacher
from hf_oracle import hooked, mean_ld

THRESHOLD = 0.20


def record(model, ids):
    """Every layer's c_proj input (z) and MLP output, as the model runs (after any hooks
    registered earlier, so an ablated run records its ablated values)."""
    zs, outs = {}, {}
    handles = []
    for l, block in enumerate(model.transformer.h):
        handles.append(block.attn.c_proj.register_forward_pre_hook(
            lambda m, a, l=l: zs.__setitem__(l, a[0].detach().clone())))
        handles.append(block.mlp.register_forward_hook(
            lambda m, a, out, l=l: outs.__setitem__(l, out.detach().clone())))
    with hooked(*handles), torch.no_grad():
        model(input_ids=ids)
    return zs, outs


def ablate(model, circuit, new_z, new_mlp, d_head):
    """Hooks that replace every head and MLP outside `circuit` by `new_z[layer]` /
    `new_mlp[layer]` ([T, d] corrupted means, or [N, T, d] paired corrupted activations)."""
    handles = []
    for l, block in enumerate(model.transformer.h):
        cols = [c for h in range(model.config.n_head) if (l, h) not in circuit
                for c in range(h * d_head, (h + 1) * d_head)]

        def patch_z(m, a, l=l, cols=cols):
            z = a[0].clone()
            z[:, :, cols] = new_z[l][..., cols]
            return (z,)

        if cols:
            handles.append(block.attn.c_proj.register_forward_pre_hook(patch_z))
        if (l, None) not in circuit:
            handles.append(block.mlp.register_forward_hook(
                lambda m, a, out, l=l: new_mlp[l].expand_as(out).clone()))
    return handles


def receive(model, receiver, delta, d_head):
    """Hooks that let only `receiver` see the residual change `delta`."""
    d = model.config.n_embd
    if receiver == "resid_final":
        return [model.transformer.ln_f.register_forward_pre_hook(lambda m, a: (a[0] + delta,))]
    parts = receiver.split(".")
    block = model.transformer.h[int(parts[0][1:])]
    seen = {}
    if parts[1] == "MLP":
        ln = block.ln_2
        grab = ln.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
        feed = block.mlp.register_forward_pre_hook(
            lambda m, a: (F.layer_norm(seen["x"] + delta, (d,), ln.weight, ln.bias, ln.eps),))
        return [grab, feed]
    ln, c_attn = block.ln_1, block.attn.c_attn
    start = "qkv".index(parts[2]) * d + int(parts[1][1:]) * d_head
    cols = slice(start, start + d_head)

    def swap(m, a, out):
        x = F.layer_norm(seen["x"] + delta, (d,), ln.weight, ln.bias, ln.eps)
        out = out.clone()
        out[..., cols] = (x @ c_attn.weight + c_attn.bias)[..., cols]
        return out

    grab = ln.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    return [grab, c_attn.register_forward_hook(swap)]


def oracle_path_patching(model, prompts, circuit_names, kind="mean", senders="intact"):
    """(baseline LD, {(sender, receiver input): LD}) by brute force; the nodes outside the
    circuit are ablated by `kind` (mean or resample), senders get their paired corrupted output
    from the intact corrupted run or (`senders` circuit_ablated) from the corrupted run with
    the nodes outside the circuit ablated."""
    circuit = {(n.layer, n.head) for n in map(Node.parse, circuit_names)}
    d_head = model.config.n_embd // model.config.n_head
    corrupted_z, corrupted_mlp = record(model, prompts.corrupted)  # paired rows
    if kind == "mean":
        new_z = {l: z.mean(0) for l, z in corrupted_z.items()}
        new_mlp = {l: o.mean(0) for l, o in corrupted_mlp.items()}
    else:
        new_z, new_mlp = corrupted_z, corrupted_mlp
    if senders == "circuit_ablated":
        with hooked(*ablate(model, circuit, new_z, new_mlp, d_head)):
            corrupted_z, corrupted_mlp = record(model, prompts.corrupted)
    key = lambda x: (x[0], x[1] if x[1] is not None else 1 << 30)  # noqa: E731
    heads = sorted((x for x in circuit if x[1] is not None), key=key)
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
                w_o = model.transformer.h[sl].attn.c_proj.weight[cols]
                sender = f"L{sl}.H{sh}"
                delta = (corrupted_z[sl][..., cols] - circuit_z[sl][..., cols]) @ w_o
            receivers = [f"L{l}.H{h}.{p}" for l, h in heads if l > sl for p in "qkv"]
            receivers += [f"L{l}.MLP" for l in mlps if l > sl or (l == sl and sh is not None)]
            for receiver in receivers + ["resid_final"]:
                with hooked(*receive(model, receiver, delta, d_head)):
                    scores[(sender, receiver)] = mean_ld(model, prompts)
    return baseline, scores


@pytest.fixture(scope="module")
def teacher(trained_teacher):
    path, _ = trained_teacher
    model, tok = load_causal_lm(path)
    prompts = filter_by_teacher(model, tokenize_prompts(NumeralTask(per_type=16, seed=8).prompts(), tok))
    return model.eval(), tok, prompts


@pytest.mark.parametrize("case", ["node-circuit", "wider-resample", "circuit-ablated-senders"])
def test_edges_equal_the_brute_force_oracle(teacher, case):
    """The teacher's node circuit as discovered (mean ablation; its paired corrupted rows are
    computed by the engine, whose source keeps only means); then a wider node set with a head
    in every later layer, so that q, k and v receivers are always exercised, under resample
    ablation (the source's own paired rows); then the node circuit with its senders taken from
    the corrupted run with the nodes outside the circuit ablated (the authors' choice)."""
    senders = "circuit_ablated" if case == "circuit-ablated-senders" else "intact"
    model, tok, prompts = teacher
    bridged = boot(model, tok)
    kind = "resample" if case == "wider-resample" else "mean"
    source = corrupted_activations(bridged, prompts, keep_full=kind == "resample")
    engine = AblationEngine(bridged, prompts, kind, source)
    circuit, _ = prune_nodes(engine, THRESHOLD)
    assert len(circuit) >= 3, circuit
    if case == "wider-resample":
        n_layers, n_heads = model.config.n_layer, model.config.n_head
        circuit |= {Node(l, (l + 1) % n_heads) for l in range(1, n_layers)} | {Node(n_layers - 1)}
    names = [n.name for n in sorted(circuit)]

    scored = path_patching(engine, circuit, sender_source=senders)
    baseline, expected = oracle_path_patching(model, prompts, names, kind, senders)
    ld_full = engine.full_metric
    assert ld_full == pytest.approx(mean_ld(model, prompts), abs=1e-5)

    # the starting point is the circuit's own LD, not the full model's
    assert scored.baseline == pytest.approx(retained_with_only(engine, circuit) / 100 * ld_full, abs=1e-5)
    assert scored.baseline == pytest.approx(baseline, abs=1e-4)

    scores = {tuple(e.to_json()): ld for e, ld in scored.scores.items()}  # (sender, receiver) names
    assert set(scores) == set(expected)
    for edge, ld in expected.items():
        assert scores[edge] == pytest.approx(ld, abs=1e-4), edge
    limit = (1 - THRESHOLD) * ld_full
    kept = {tuple(e.to_json()) for e in prune_edges(engine, circuit, THRESHOLD, sender_source=senders)}
    assert kept == {e for e, ld in expected.items() if ld < limit}
    if case != "wider-resample":
        assert scored.baseline >= limit - 1e-6
        assert kept, "the node circuit keeps some edges"
    else:
        assert {r[-1] for _, r in expected if r.count(".") == 2} == set("qkv")
    if senders == "circuit_ablated":  # the choice matters: some edge scores otherwise
        intact = path_patching(engine, circuit).scores
        assert max(abs(intact[e] - ld) for e, ld in scored.scores.items()) > 1e-3
