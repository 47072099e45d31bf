"""The effect of each of the authors' conventions on A (docs/method.md §12), on a teacher and
its students: A under the authors preset (the prompts `kdmech analyze` uses: the task under the
preset, filtered by the teacher), then with each switch set back to kdmech's definition one at
a time, with the authors' sampling, with kdmech's own MLP score (svd3), and the whole kdmech
preset; plus A's range over the eigenvector signs.

    python analyze/authors_conventions.py runs/quickstart/teacher runs/quickstart/students/d0.25-w1-h1 ...
"""

import argparse
import json
from functools import cache
from pathlib import Path

from kdmech.analysis import profile
from kdmech.analysis.conventions import KDMECH, SWITCHES, AlignmentConventions, without
from kdmech.analysis.pair import score_alignment
from kdmech.analysis.presets import alignment_side, get_preset
from kdmech.errors import KdmechError
from kdmech.models import load_lm
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.tasks.filtering import competent_prompts
from kdmech.tasks.forms import prompt_form


def measure(teacher: str, student: str, task: str = "numerals", per_type: int = 128) -> dict:
    preset = get_preset("authors")
    t_model, t_tok, kind = load_lm(teacher)
    s_model, s_tok, _ = load_lm(student)
    texts = get_task(task, cloze=prompt_form(kind).cloze, **preset.task_options(task, per_type)).prompts()
    prompts, _ = competent_prompts(t_model, check_same_tokenization(t_tok, s_tok, texts, kind), 0.9, 64)
    tp, sp = profile(t_model, t_tok, prompts), profile(s_model, s_tok, prompts)
    conventions = preset.conventions(prompts.task)

    @cache
    def sides(ablation, keep_bias, sampling):
        c = AlignmentConventions(ablation=ablation, value_bias_kept=keep_bias)
        return (alignment_side(tp, c, sampling, t_tok.bos_token_id) or tp,
                alignment_side(sp, c, sampling, s_tok.bos_token_id) or sp)

    def scored(c, sampling=False, mlp="authors"):
        t, s = sides(c.ablation, c.value_bias_kept, sampling)
        return score_alignment(t, s, "student_to_teacher", mlp, "sum", c)

    full = scored(conventions)
    row = {"student": Path(student).name, "n_prompts": len(prompts), "conventions": conventions.source,
           "A": full.alignment.A, "A_heads": full.alignment.A_heads, "A_mlp": full.alignment.A_mlp,
           "sign_range": full.sign_range["A"], "sign_range_mlp": full.sign_range["A_mlp"],
           "A_pinned_signs": full.sign_range["A_pinned"],
           "A_authors_sampling": scored(conventions, sampling=True).alignment.A,
           "A_svd3": scored(conventions, mlp="svd3").alignment.A,
           "A_kdmech_preset": scored(KDMECH, mlp="svd3").alignment.A, "delta_without": {}}
    for switch in SWITCHES:
        if getattr(conventions, switch) != getattr(KDMECH, switch):
            row["delta_without"][switch] = scored(without(conventions, switch)).alignment.A - full.alignment.A
    if conventions.ablation != "zero":  # what an A from plain zero ablation would be
        row["delta_zero_ablation"] = scored(AlignmentConventions(**{
            **conventions.to_json(), "ablation": "zero", "value_bias_kept": False})).alignment.A - full.alignment.A
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher")
    p.add_argument("students", nargs="+")
    p.add_argument("--task", default="numerals")
    p.add_argument("--per_type", type=int, default=128)
    args = p.parse_args(argv)
    try:
        rows = [measure(args.teacher, s, args.task, args.per_type) for s in args.students]
    except KdmechError as e:
        raise SystemExit(f"authors_conventions: error: {e}") from None
    print(json.dumps(rows, indent=1))
    switches = sorted({k for r in rows for k in r["delta_without"]}, key=SWITCHES.index)
    print(f"\n{'student':14} {'A':>7} {'signs':>15} {'sampled':>8} {'svd3':>7} {'kdmech':>7} "
          + " ".join(f"{s[:12]:>12}" for s in switches))
    for r in rows:
        print(f"{r['student']:14} {r['A']:7.3f} [{r['sign_range'][0]:.3f}, {r['sign_range'][1]:.3f}] "
              f"{r['A_authors_sampling']:8.3f} {r['A_svd3']:7.3f} {r['A_kdmech_preset']:7.3f} "
              + " ".join(f"{r['delta_without'].get(s, 0.0):+12.3f}" for s in switches))


if __name__ == "__main__":
    main()
