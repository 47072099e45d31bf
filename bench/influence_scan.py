"""Benchmark: the full single-node influence scan, fast engine vs a naive loop.

GPT-2-small shape (12 layers, 12 heads, d_model 768, vocabulary 50257; random weights) on 100
prompts of 16 tokens, mean ablation. Naive = one full forward per node through the bridge with
full-vocabulary logits (`ablated_metric_mean`). Both run here, in this process, one after the
other, and must agree to |Δ| < 1e-4. Prints the ratio.

    python bench/influence_scan.py            # quick (make bench): 4 layers, 40 prompts
    python bench/influence_scan.py --full     # GPT-2-small shape: 12 layers, 100 prompts
"""

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from kdmech.analysis import AblationKind, ablated_metric_mean, boot, corrupted_activations
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.models import build_word_tokenizer
from kdmech.tasks.prompt_set import PromptSet, PromptTexts


def random_prompts(n: int, t: int, vocab: int, seed: int = 0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, t), generator=g)
    corrupted = torch.randint(0, vocab, (n, t), generator=g)
    answers, wrongs = torch.randint(0, vocab, (n,), generator=g), torch.randint(0, vocab, (n,), generator=g)
    texts = PromptTexts("random", ["?"] * n, ["?"] * n, ["?"] * n, ["?"] * n)
    return PromptSet(texts, clean, corrupted, answers, wrongs, torch.full((n,), t - 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="GPT-2-small shape (12 layers, 100 prompts)")
    ap.add_argument("--layers", type=int, default=None, help="default 4, or 12 with --full")
    ap.add_argument("--prompts", type=int, default=None, help="default 40, or 100 with --full")
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    args.layers = args.layers or (12 if args.full else 4)
    args.prompts = args.prompts or (100 if args.full else 40)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_head=12, n_embd=768, vocab_size=50257, n_positions=64)
    model = GPT2LMHeadModel(cfg).eval()
    prompts = random_prompts(args.prompts, args.tokens, cfg.vocab_size)
    bridged = boot(model, build_word_tokenizer())
    source = corrupted_activations(bridged, prompts)
    nodes = bridged.nodes
    print(f"{len(nodes)} nodes, {args.prompts} prompts × {args.tokens} tokens, "
          f"{args.layers} layers × 12 heads × 768, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    naive = [ablated_metric_mean(bridged, prompts, [n], AblationKind.MEAN, source) for n in nodes]
    t_naive = time.perf_counter() - start
    print(f"naive loop : {t_naive:7.1f} s ({t_naive / len(nodes):.2f} s/node)")

    start = time.perf_counter()
    engine = AblationEngine(bridged, prompts, AblationKind.MEAN, source)
    fast = engine.metrics([[n] for n in nodes])
    t_fast = time.perf_counter() - start
    print(f"engine     : {t_fast:7.1f} s ({t_fast / len(nodes):.2f} s/node, cache included)")

    diff = max(abs(a - b) for a, b in zip(naive, fast))
    print(f"max |Δ LD| : {diff:.2e}  ({'ok' if diff < 1e-4 else 'MISMATCH'})")
    print(f"speed-up   : {t_naive / t_fast:.2f}x (target ≥ 3x)")
    print(f"BENCH influence_scan: {args.layers} layers, {args.prompts} prompts: engine {t_naive / t_fast:.2f}x "
          f"faster than the naive loop, max |Δ LD| {diff:.1e}")
    if diff >= 1e-4:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
