"""Benchmark: `kdmech distill` with vs without checkpoint analyses (issue 14 item 1).

The quickstart shape: its tiny GPT-2 teacher (runs/quickstart/teacher when present, else one
trained here into a temp folder with kdmech.commands.train_teacher), a depth-0.5 student, the
quickstart's DistillTraining (400 steps, batch 64, lr 2e-3) and its AnalysisSchedule (every
100 steps, circuits every 200), W&B offline as the quickstart runs it. Both sides are whole
`distill` calls with the same seed, interleaved (on, off, on, off, ...) in this one process;
the overhead is the ratio of the medians. Target: ≤ 10 %.

    python bench/callback_overhead.py [--reps 1] [--steps 400] [--teacher DIR] [--profile]

--profile also runs one checkpoint analysis under cProfile and prints the top entries.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kdmech.analysis.options import AnalysisSchedule
from kdmech.commands.distill import DistillTraining, distill
from kdmech.models import CapacitySpec

ON = AnalysisSchedule(every_n_steps=100, circuit_every_n_steps=200)
OFF = AnalysisSchedule(enabled=False)


def teacher_folder(given: str | None, work: Path) -> str:
    if given:
        return given
    ready = Path("runs/quickstart/teacher")
    if (ready / "model.safetensors").exists():
        return str(ready)
    from kdmech.commands.train_teacher import TeacherTraining, train_teacher
    train_teacher(work / "teacher", training=TeacherTraining(steps=3000, batch_size=64, lr=3e-3,
                                                             warmup_steps=100, target_top1=0.99),
                  wandb="disabled", progress=False)
    return str(work / "teacher")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--wandb", default="offline")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sides", default="on,off", help="on,off (default) or one of them")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kdmech-overhead-"))
    teacher = teacher_folder(args.teacher, work)
    training = DistillTraining(steps=args.steps, batch_size=64, lr=2e-3)
    times = {"on": [], "off": []}
    for rep in range(args.reps):
        for side, schedule in (("on", ON), ("off", OFF)):
            if side not in args.sides.split(","):
                continue
            start = time.perf_counter()
            distill(teacher, work / f"{side}-{rep}", CapacitySpec(depth=0.5), training=training,
                    analysis=schedule, wandb=args.wandb, progress=False)
            times[side].append(time.perf_counter() - start)
            print(f"rep {rep} analyses {side}: {times[side][-1]:.1f} s", flush=True)
    if not (times["on"] and times["off"]):
        return
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    overhead = 100 * (on - off) / off
    print("\n| callback_overhead | seconds (median of %d) |" % args.reps)
    print("|---|---|")
    print(f"| distill, analyses on  | {on:.1f} |")
    print(f"| distill, analyses off | {off:.1f} |")
    print(f"| overhead              | {overhead:.1f} % (target ≤ 10 %) |")
    print(f"BENCH callback_overhead: overhead {overhead:.1f}% ({on:.1f} s vs {off:.1f} s)")
    if args.profile:
        profile_one(teacher)


def profile_one(teacher: str):
    """cProfile one checkpoint analysis with circuits, as the callback runs it."""
    import cProfile
    import pstats

    from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
    from kdmech.commands.distill import analysis_prompts
    from kdmech.models import build_student, load_lm
    model, tok, _ = load_lm(teacher)
    prompts, competence = analysis_prompts(model, tok, ON)
    student, _ = build_student(model, CapacitySpec(depth=0.5), "every_k", seed=0)
    side = TeacherSide.build(model, tok, prompts, ON, competence.to_json())
    for circuits in (False, True):
        pr = cProfile.Profile()
        start = time.perf_counter()
        pr.enable()
        analyze_checkpoint(side, student, tok, prompts, 100, circuits=circuits)
        pr.disable()
        print(f"\none checkpoint analysis, circuits={circuits}: {time.perf_counter() - start:.2f} s")
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
