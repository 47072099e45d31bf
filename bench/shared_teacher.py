"""Benchmark: three students sharing one teacher pass vs three separate distillation runs.

Both sides are whole runs of kdmech's own commands (`distill` three times, `distill-shared`
once) on the tiny GPT-2 teacher shape (4 layers, d_model 128), the same steps and batches,
checkpoint analysis off so only distillation is timed, measured one after the other in this
process. Two student sets: depth 0.25/0.5/0.75 at full width (there the teacher's forward is
a small share of the work — students' forward and backward dominate — so sharing it can save
at most about a quarter), and the same depths at half width, where the teacher's share is
larger. Prints both ratios (target ≤ 0.7).

    python bench/shared_teacher.py [--steps 60] [--full]   (--full: 200 steps)
"""

import argparse
import tempfile
import time
from pathlib import Path

from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
from kdmech.commands.distill_shared import distill_shared
from kdmech.models import CapacitySpec, TinyGPT2Spec, build_word_tokenizer

OFF = AnalysisSchedule(enabled=False, filter_prompts=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="default 60 (quick, make bench), 200 with --full")
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    args.steps = args.steps or (200 if args.full else 60)
    summary = []
    work = Path(tempfile.mkdtemp(prefix="kdmech-bench-"))
    tok = build_word_tokenizer()
    TinyGPT2Spec().build(tok).save_pretrained(work / "teacher")
    tok.save_pretrained(work / "teacher")
    training = DistillTraining(steps=args.steps)
    common = dict(training=training, analysis=OFF, wandb="disabled", progress=False)
    for width in (1.0, 0.5):
        caps = [CapacitySpec(depth=d, width=width) for d in (0.25, 0.5, 0.75)]
        start = time.perf_counter()
        for c in caps:
            distill(str(work / "teacher"), work / f"separate-{width}", c, **common)
        separate = time.perf_counter() - start
        start = time.perf_counter()
        distill_shared(str(work / "teacher"), work / f"shared-{width}", caps, **common)
        shared = time.perf_counter() - start
        print(f"students {', '.join(c.name for c in caps)}; {args.steps} steps each")
        print(f"  3 separate runs   : {separate:6.1f} s")
        print(f"  1 shared-teacher  : {shared:6.1f} s")
        print(f"  ratio shared/sep. : {shared / separate:.2f} (target ≤ 0.70)")
        summary.append(f"width {width:g}: {shared / separate:.2f}")
    print(f"BENCH shared_teacher: shared/separate wall time, {args.steps} steps: {'; '.join(summary)}")


if __name__ == "__main__":
    main()
