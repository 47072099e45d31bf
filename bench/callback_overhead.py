"""Benchmark: `kdmech distill` with vs without checkpoint analyses.

The quickstart shape: its tiny GPT-2 teacher (runs/quickstart/teacher when present, else one
trained here into a temp folder with kdmech.teacher), a depth-0.5 student, the
quickstart's DistillTraining (400 steps, batch 64, lr 2e-3), W&B offline as the quickstart runs
it. Sides, each one whole `distill` call with the same seed, run in turn in this one process,
all validating and checkpointing every 100 steps (only the analyses differ):
  first       kdmech distill's cadence, the teacher never analysed before: its profile, circuit
              and probes computed in the run (and kept in the teacher-side cache)
  default     kdmech distill's cadence: analyses at 0, 200, 400, circuits at the end; the
              teacher side read from the cache, as every later run of the teacher does
  quickstart  the quickstart's: analyses every 100 steps, circuits every 200 (cache as default)
  background  the quickstart's, analysed on a copy of the student in a thread (--sides)
  off         no analyses
The cache is a fresh temporary KDMECH_CACHE, emptied before each `first` run. An untimed
20-step run comes first: a process's first run pays one-time costs (imports, first calls).
The overhead is each side's median over --reps against off's. Target: ≤ 10 %. The records of
the steps the analysing sides share must be identical (printed). On a shared machine two runs
of one side differ by seconds, so each analysing side also reports the time spent inside the
analyses in its own run (the callback's hooks and the analysis prompts, clocked around them)
against the off side's wall time: the same overhead, free of the drift between runs.

    python bench/callback_overhead.py [--reps 1] [--steps 400] [--teacher DIR] [--sides ...] [--profile]

--profile also runs one checkpoint analysis under cProfile and prints the top entries.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from kdmech.analysis.checkpoint import forget_shared_teacher_sides
from kdmech.analysis.options import AnalysisSchedule
from kdmech.distill.trainer import TrainerOptions
from kdmech.commands.distill import DistillTraining, distill
from kdmech.models import CapacitySpec

QUICKSTART = AnalysisSchedule(every_n_steps=100, circuit_every_n_steps=200)
"""The quickstart's cadence: analyses every 100 steps, circuits every 200."""
DEFAULT = AnalysisSchedule()
"""kdmech distill's default cadence: analyses every 200 steps, circuits at the end."""
OFF = AnalysisSchedule(enabled=False)
BACKGROUND = replace(QUICKSTART, background=True)
"""The quickstart's cadence, each checkpoint analysed on a copy of the student in a background
thread while training goes on."""
TRAINER = TrainerOptions(val_check_interval=100, checkpoint_every_n_steps=100)
"""Every side validates and checkpoints at the same steps: only the analyses differ."""
SIDES = {"first": DEFAULT, "default": DEFAULT, "quickstart": QUICKSTART, "background": BACKGROUND,
         "off": OFF}


def teacher_folder(given: str | None, work: Path) -> str:
    if given:
        return given
    ready = Path("runs/quickstart/teacher")
    if (ready / "model.safetensors").exists():
        return str(ready)
    from kdmech.teacher import TeacherTraining, train_teacher
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
    ap.add_argument("--sides", default="first,default,quickstart,off",
                    help="which of first, default, quickstart, background, off to run")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kdmech-overhead-"))
    os.environ["KDMECH_CACHE"] = str(work / "cache")  # never the user's cache
    teacher = teacher_folder(args.teacher, work)
    training = DistillTraining(steps=args.steps, batch_size=64, lr=2e-3)
    # untimed: the first run of a process pays one-time costs (imports, first calls) that
    # would otherwise land on whichever side runs first
    distill(teacher, work / "warm-up", CapacitySpec(depth=0.5), training=replace(training, steps=20),
            analysis=replace(DEFAULT, every_n_steps=10), trainer=TRAINER, wandb=args.wandb, progress=False)
    times = {side: [] for side in SIDES}
    inside = {side: [] for side in SIDES}
    clock = _clock_analyses()
    for rep in range(args.reps):
        for side, schedule in SIDES.items():
            if side not in args.sides.split(","):
                continue
            forget_shared_teacher_sides()  # each run is a process of its own: no in-process sharing
            if side == "first":
                shutil.rmtree(work / "cache", ignore_errors=True)
            clock.clear()
            start = time.perf_counter()
            distill(teacher, work / f"{side}-{rep}", CapacitySpec(depth=0.5), training=training,
                    analysis=schedule, trainer=TRAINER, wandb=args.wandb, progress=False)
            times[side].append(time.perf_counter() - start)
            inside[side].append(sum(clock.values()))
            print(f"rep {rep} analyses {side}: {times[side][-1]:.1f} s, {inside[side][-1]:.1f} s of it "
                  f"inside the analyses", flush=True)
    if not times["off"]:
        return
    med = {side: statistics.median(t) for side, t in times.items() if t}
    off = med["off"]
    ins = {side: statistics.median(t) for side, t in inside.items() if t}
    print("\n| callback_overhead | seconds (median of %d) | overhead vs off | inside the analyses |" % args.reps)
    print("|---|---|---|---|")
    for side in med:
        print(f"| distill, analyses {side} | {med[side]:.1f} | "
              + ("– | –" if side == "off" else f"{100 * (med[side] - off) / off:.1f} % | "
                 f"{ins[side]:.1f} s = {100 * ins[side] / off:.1f} % (target ≤ 10 %)") + " |")
    print("BENCH callback_overhead: " + ", ".join(
        f"{side} {100 * (med[side] - off) / off:+.1f}% (inside {100 * ins[side] / off:.1f}%)"
        for side in med if side != "off") + f" (off {off:.1f} s)")
    same = _same_records(work, [f"{side}-0" for side in med if side != "off"])
    if same is not None:
        print(f"records of the steps {', '.join(s for s in med if s != 'off')} all analysed: "
              + ("identical" if same else "DIFFERENT"))
    if args.profile:
        profile_one(teacher)


def _clock_analyses() -> dict:
    """Clock every entry into the analyses during a run: the callback's hooks and the analysis
    prompts (the teacher's competence gate). Returns the {what: seconds} the runs add to."""
    import functools

    import kdmech.commands.distill as distill_module
    from kdmech.callbacks import CircuitAnalysisCallback

    spent: dict = {}

    def clocked(owner, name):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        setattr(owner, name, wrapper)

    for hook in ("on_train_start", "on_train_batch_end", "on_train_end"):
        clocked(CircuitAnalysisCallback, hook)
    clocked(distill_module, "analysis_prompts")
    return spent


def _same_records(work: Path, runs: list[str]):
    """Whether the runs' records of the steps they all analysed are equal, byte for byte (None
    when fewer than two runs share a step)."""
    if len(runs) < 2:
        return None
    names = [{p.relative_to(work / r): p for p in (work / r / "analysis").rglob("*step_*.json")} for r in runs]
    common = set.intersection(*(set(n) for n in names))
    if not common:
        return None
    return all(len({n[c].read_text() for n in names}) == 1 for c in common)


def profile_one(teacher: str):
    """cProfile one checkpoint analysis with circuits, as the callback runs it."""
    import cProfile
    import pstats

    from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
    from kdmech.commands.distill import analysis_prompts
    from kdmech.models import build_student, load_lm
    model, tok, _ = load_lm(teacher)
    prompts, competence = analysis_prompts(model, tok, QUICKSTART)
    student, _ = build_student(model, CapacitySpec(depth=0.5), "every_k", seed=0)
    side = TeacherSide.build(model, tok, prompts, QUICKSTART, competence.to_json())
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
