"""Benchmark: one KD step at GPT-2-small shape, fp32 and bf16 autocast, beside this machine's
fp32 and bf16 matmul peaks measured in the same run.

Teacher GPT2LMHeadModel(GPT2Config()) with random weights (12 layers, 12 heads, d 768, vocab
50,257); student `build_student(teacher, CapacitySpec(depth=0.5))` (6 layers); batch 8 × 128.
One step = DistillationModule.losses (teacher forward under no_grad, student forward, KL + CE +
cosine) + backward + AdamW step, as Lightning's training_step does it. bf16: the forward and
the loss under torch.autocast(device, dtype=torch.bfloat16) (what --trainer.precision
bf16-mixed does), backward outside it. The two precisions and the two matmul sizes are
interleaved, medians reported.

Weight FLOPs per step: 6 × student params × tokens (forward + backward) + 2 × teacher params ×
tokens (teacher forward). Peaks: the best of repeated n × n matmuls (n = 2048 by default).

    python bench/kd_step.py [--reps 3] [--batch 8] [--seq 128] [--profile]
"""

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from kdmech.distill import DistillationModule, LossWeights
from kdmech.models import CapacitySpec, build_student


def matmul_peak(dtype, n: int, reps: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def build(batch: int, seq: int, teacher=None):
    """(KD module, optimizer, batch, student and teacher parameter counts) of a half-depth
    student of `teacher` (default: a random GPT-2 small)."""
    torch.manual_seed(0)
    teacher = teacher if teacher is not None else GPT2LMHeadModel(GPT2Config()).eval()
    student, prov = build_student(teacher, CapacitySpec(depth=0.5), "every_k", seed=0)
    module = DistillationModule(teacher, {"s": student}, {"s": list(prov["layer_map"].values())},
                                LossWeights())
    opt = torch.optim.AdamW([p for n, p in module.named_parameters() if not n.startswith("teacher.")], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    data = {"input_ids": torch.randint(0, teacher.config.vocab_size, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return module, opt, data, count(student), count(teacher)


def step(module, opt, data, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.losses(data)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--n", type=int, default=2048, help="matmul size for the peaks")
    ap.add_argument("--profile", action="store_true", help="torch.profiler over one bf16 step")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    module, opt, data, n_student, n_teacher = build(args.batch, args.seq)
    tokens = args.batch * args.seq
    flops = 6 * n_student * tokens + 2 * n_teacher * tokens
    step(module, opt, data, False), step(module, opt, data, True)  # warm-up
    times = {"fp32": [], "bf16": []}
    peaks = {"fp32": [], "bf16": []}
    for _ in range(args.reps):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[name].append(matmul_peak(dtype, args.n, 3))
            times[name].append(step(module, opt, data, name == "bf16"))
    print(f"\nstudent {n_student / 1e6:.1f} M params, teacher {n_teacher / 1e6:.1f} M, {tokens} tokens, "
          f"{flops / 1e12:.3f} TFLOP per step (weight FLOPs)")
    print("| kd_step | step s (median) | GFLOP/s | matmul peak GFLOP/s | % of peak |")
    print("|---|---|---|---|---|")
    summary = []
    for name in ("fp32", "bf16"):
        t, peak = statistics.median(times[name]), max(peaks[name])
        rate = flops / t
        print(f"| {name} | {t:.2f} | {rate / 1e9:.0f} | {peak / 1e9:.0f} | {100 * rate / peak:.0f} % |")
        summary.append(f"{name} {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of {peak / 1e9:.0f}")
    print(f"BENCH kd_step: {'; '.join(summary)}; bf16/fp32 speed-up "
          f"{statistics.median(times['fp32']) / statistics.median(times['bf16']):.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(module, opt, data, True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
