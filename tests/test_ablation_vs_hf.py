"""The bridge-based ablation engine against hand-written Hugging Face forward hooks.

The reference never touches TransformerLens: it hooks GPT-2's own modules. A head's output
before W_O is the input of `attn.c_proj` (heads concatenated, head h at columns h·d_head…);
an MLP's output is the output of the block's `mlp` module.
"""

import pytest
import torch

from kdmech.analysis import AblationKind, Node, ablated_metric_mean, boot, corrupted_activations
from kdmech.analysis.profile import clean_run


def hf_ld(model, prompts):
    with torch.no_grad():
        logits = model(input_ids=prompts.clean).logits
    rows = torch.arange(len(prompts))
    at = logits[rows, prompts.positions]
    return (at[rows, prompts.answers] - at[rows, prompts.wrong_answers]).mean().item()


def capture(model, module, ids, pre: bool):
    seen = {}

    def grab_pre(mod, args):
        seen["x"] = args[0].detach().clone()

    def grab(mod, args, output):
        seen["x"] = output.detach().clone()

    handle = module.register_forward_pre_hook(grab_pre) if pre else module.register_forward_hook(grab)
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen["x"]


def test_logit_diff_matches_hf(tiny_gpt2, tokenizer, prompts):
    lds, _, _ = clean_run(boot(tiny_gpt2, tokenizer), prompts)
    assert lds.mean().item() == pytest.approx(hf_ld(tiny_gpt2, prompts), abs=1e-5)


@pytest.mark.parametrize("layer,head", [(0, 1), (1, 3)])
def test_head_mean_ablation_matches_hf_hook(tiny_gpt2, tokenizer, prompts, layer, head):
    c_proj = tiny_gpt2.transformer.h[layer].attn.c_proj
    d_head = tiny_gpt2.config.n_embd // tiny_gpt2.config.n_head
    cols = slice(head * d_head, (head + 1) * d_head)
    mean_z = capture(tiny_gpt2, c_proj, prompts.corrupted, pre=True).mean(0)  # [T, d]

    def patch(mod, args):
        z = args[0].clone()
        z[:, :, cols] = mean_z[:, cols]
        return (z,)

    handle = c_proj.register_forward_pre_hook(patch)
    expected = hf_ld(tiny_gpt2, prompts)
    handle.remove()

    bridged = boot(tiny_gpt2, tokenizer)
    source = corrupted_activations(bridged, prompts)
    got = ablated_metric_mean(bridged, prompts, [Node(layer, head)], AblationKind.MEAN, source)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got != pytest.approx(hf_ld(tiny_gpt2, prompts), abs=1e-6)  # the ablation did something


def test_mlp_mean_ablation_matches_hf_hook(tiny_gpt2, tokenizer, prompts):
    mlp = tiny_gpt2.transformer.h[1].mlp
    mean_out = capture(tiny_gpt2, mlp, prompts.corrupted, pre=False).mean(0)
    handle = mlp.register_forward_hook(lambda mod, args, out: mean_out.expand_as(out))
    expected = hf_ld(tiny_gpt2, prompts)
    handle.remove()
    bridged = boot(tiny_gpt2, tokenizer)
    got = ablated_metric_mean(bridged, prompts, [Node(1)], AblationKind.MEAN,
                             corrupted_activations(bridged, prompts))
    assert got == pytest.approx(expected, abs=1e-5)


def test_zero_and_resample_ablation_match_hf_hooks(tiny_gpt2, tokenizer, prompts):
    c_proj = tiny_gpt2.transformer.h[0].attn.c_proj
    d_head = tiny_gpt2.config.n_embd // tiny_gpt2.config.n_head
    cols = slice(2 * d_head, 3 * d_head)
    corrupted_z = capture(tiny_gpt2, c_proj, prompts.corrupted, pre=True)  # [N, T, d]
    results = {}
    for kind, value in (("zero", torch.zeros_like(corrupted_z)), ("resample", corrupted_z)):
        def patch(mod, args, value=value):
            z = args[0].clone()
            z[:, :, cols] = value[:, :, cols]
            return (z,)
        handle = c_proj.register_forward_pre_hook(patch)
        results[kind] = hf_ld(tiny_gpt2, prompts)
        handle.remove()
    bridged = boot(tiny_gpt2, tokenizer)
    source = corrupted_activations(bridged, prompts, keep_full=True)
    for kind in ("zero", "resample"):
        got = ablated_metric_mean(bridged, prompts, [Node(0, 2)], AblationKind(kind), source)
        assert got == pytest.approx(results[kind], abs=1e-5), kind


def test_boot_leaves_the_original_model_untouched(tiny_gpt2, tokenizer):
    before = type(tiny_gpt2.transformer.h[0].attn)
    boot(tiny_gpt2, tokenizer)
    assert type(tiny_gpt2.transformer.h[0].attn) is before


@pytest.mark.parametrize("fast_path", [True, False], ids=["gpt2-runner", "bridge"])
@pytest.mark.parametrize("kind", ["mean", "zero", "resample"])
def test_engine_equals_the_plain_reference(tiny_gpt2, tokenizer, prompts, kind, fast_path):
    from kdmech.analysis.ablation.engine import AblationEngine

    bridged = boot(tiny_gpt2, tokenizer)
    source = corrupted_activations(bridged, prompts, keep_full=True)
    engine = AblationEngine(bridged, prompts, kind, source, max_rows=3 * len(prompts),
                            fast_path=fast_path)
    assert (engine.runner is not None) == fast_path
    sets = [[], [Node(0, 1)], [Node(1)], [Node(0)], [Node(1, 0), Node(1, 3)],
            [Node(0, 2), Node(1), Node(1, 1)], [Node(1, 2)], [Node(0, 0), Node(0), Node(1, 2)],
            [Node(0, 3), Node(0, 1)]]
    fast = engine.metrics(sets)
    for nodes, got in zip(sets, fast):
        ref = ablated_metric_mean(bridged, prompts, nodes, AblationKind(kind), source)
        assert got == pytest.approx(ref, abs=1e-5), nodes
    assert engine.full_metric == pytest.approx(hf_ld(tiny_gpt2, prompts), abs=1e-5)
    # the early-stopped forwards leave no hooks behind
    assert ablated_metric_mean(bridged, prompts, [], AblationKind(kind), source) == pytest.approx(
        engine.full_metric, abs=1e-5)


def test_gpt2_runner_on_a_deeper_model_equals_the_reference(tokenizer, prompts):
    """Four layers exercise every branch: start block, middle blocks, last block."""
    from kdmech.analysis.ablation.engine import AblationEngine
    from kdmech.models import TinyGPT2Spec

    model = TinyGPT2Spec(n_layer=4, n_head=2, n_embd=16).build(tokenizer, seed=5).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(10)
    bridged = boot(model, tokenizer)
    source = corrupted_activations(bridged, prompts)
    engine = AblationEngine(bridged, prompts, "mean", source)
    assert engine.runner is not None
    sets = [[n] for n in bridged.nodes] + [[Node(0, 1), Node(2), Node(3, 0)], [Node(1, 0), Node(3)]]
    for nodes, got in zip(sets, engine.metrics(sets)):
        ref = ablated_metric_mean(bridged, prompts, nodes, AblationKind.MEAN, source)
        assert got == pytest.approx(ref, abs=1e-4, rel=1e-5), nodes
