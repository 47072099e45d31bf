"""Compare a saved teacher and student (GPT-2 or BERT) on the numeral task with the plain
analysis functions.

    python analyze/compare_pair.py runs/quickstart/teacher runs/quickstart/students/d0.5-w1-h1
"""

import json
import sys

from kdmech.analysis import compare, profile
from kdmech.errors import KdmechError
from kdmech.models import load_lm
from kdmech.tasks import check_same_tokenization, get_task


def run(teacher_path: str, student_path: str) -> dict:
    teacher, t_tok, kind = load_lm(teacher_path)
    student, s_tok, _ = load_lm(student_path)
    # BERT reads the cloze form at [MASK] (starts kept, as in the BERT quickstart)
    task = get_task("numerals-any-start", cloze=kind == "masked", tokenizer=t_tok).prompts()
    prompts = check_same_tokenization(t_tok, s_tok, task, kind)
    result = compare(profile(teacher, t_tok, prompts), profile(student, s_tok, prompts),
                     step=0, task=prompts.task)
    return result.to_json()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: compare_pair.py TEACHER STUDENT")
    try:
        out = run(*sys.argv[1:])
    except KdmechError as e:
        sys.exit(f"compare_pair: error: {e}")
    print(json.dumps({k: out[k] for k in ("logit_diff", "alignment", "worst_drop", "merges")}, indent=1))
