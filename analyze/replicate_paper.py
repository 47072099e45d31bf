"""Replicate "Distilled Circuits" (arXiv 2505.10822): GPT-2 → DistilGPT2, BERT → DistilBERT or Llama 3.1 → Minitron.

Exactly as docs/method.md describes: 128 prompts per type, the teacher filter, mean ablation, node
circuits at T = 20% (with path-patched edges), sensitivity over heads and MLPs, and the
alignment metric — printed beside the paper's reference values. The same pair is analysed
again under the `authors` preset (their conventions: A as the task's notebook computes it — on
numerals their mean ablation, heads below 0.95 similarity counted twice, 2-decimal rounding, their
MLP score with LAPACK's eigenvector signs — pooled clamped sensitivity with their bootstrap)
and both sets of numbers are printed side by side. Needs the hub weights (or local folders of the same kind):

    python analyze/replicate_paper.py                       # gpt2 vs distilgpt2 from the hub
    python analyze/replicate_paper.py --family bert         # bert-base-uncased vs distilbert-base-uncased
    python analyze/replicate_paper.py --family llama        # Llama-3.1-8B vs Llama-3.1-Minitron-4B-Depth-Base
                                                            # (in bf16: --dtype float32 for float32)
    python analyze/replicate_paper.py --teacher DIR --student DIR --out runs/replicate
    python analyze/replicate_paper.py --preset kdmech       # one preset only (kdmech or authors)

OUT/analysis.json holds the kdmech run (with circuits), OUT/authors/analysis.json the authors
run (when both run; a single preset writes OUT/analysis.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdmech.analysis.presets import PRESETS
from kdmech.commands.analyze import AnalyzeOptions, analyze
from kdmech.errors import KdmechError

# GPT-2 small's numeral circuit at 80% (Lan et al.), quoted in docs/method.md §5.4.
REFERENCE_HEADS = ["L0.H1", "L1.H5", "L4.H4", "L4.H10", "L5.H0", "L6.H1", "L6.H6", "L6.H10",
                   "L7.H11", "L8.H1", "L8.H6", "L8.H8", "L8.H9", "L9.H1"]
REFERENCE_MLPS = [f"L{l}.MLP" for l in range(12) if l != 5]
# The authors' code, GPT-2 → DistilGPT2, numerals, heads (docs/method.md §6, §8).
REFERENCE = {"teacher_mean_drop": 0.77, "teacher_worst_drop": 16.4, "student_mean_drop": 6.72,
             "student_worst_drop": 90.6, "A": "0.895 (number words), 0.90 (IOI)", "C": 0.34}
# Sensitivity the authors' way (drops 100 − clamp(retained, 0, 100), heads and MLPs pooled,
# bootstrap 10,000, seed 42): their robustness/plots/compute_robustness.py run on the GPT-2
# retained percentages it lists (numbers computed from their data, not quoted from the paper).
REFERENCE_POOLED = {"teacher": (3.06, (1.71, 4.66), 71.3), "student": (12.24, (6.45, 18.83), 100.0),
                    "delta": (9.12, (3.12, 15.76))}
# BERT → DistilBERT (docs/method.md §8, §11): cloze numerals read at [MASK]; post-LayerNorm, so no edges.
REFERENCE_BERT = {"A": "0.821 (numerals), 0.853 (IOI)", "C": 0.39}
REFERENCES = {"gpt2": REFERENCE, "bert": REFERENCE_BERT,
              "llama": {"A": "– (not quoted here)", "C": "–"}}  # Llama: REFERENCE_LLAMA's drop-one scores
# Llama 3.1 8B → Llama-3.1-Minitron-4B-Depth-Base: the authors' drop-one scores, summarised from
# Reih02/distilled_circuits Llama_experiments/{lh,mlp}_scores_{teacher,student}.json (the retained
# percentage of the logit difference with one head or MLP zeroed, over their 64 numeral prompts;
# their heads are zeroed on a slice of o_proj's *output*, i.e. of the residual stream — kdmech
# ablates the head's own slice of o_proj's input, docs/method.md §3 — so the two need not agree).
# Per model: the MLPs' mean |100 − retained| and the nodes with the largest |100 − retained|
# (name, retained %); for the heads only their largest drops.
REFERENCE_LLAMA = {
    "teacher": {"mlp_mean_drop": 13.52,
                "mlps": [("L0.MLP", -10.40), ("L1.MLP", -9.08), ("L31.MLP", 147.82), ("L6.MLP", 84.15)],
                "heads": [("L22.H15", 82.08), ("L18.H30", 89.46), ("L30.H31", 89.78), ("L31.H14", 90.60),
                          ("L16.H30", 108.09), ("L16.H29", 92.00)]},
    "student": {"mlp_mean_drop": 32.92,
                "mlps": [("L1.MLP", -8.34), ("L0.MLP", -7.13), ("L15.MLP", 19.39), ("L14.MLP", 52.94)],
                "heads": [("L15.H22", 25.65), ("L13.H27", 35.52), ("L14.H1", 54.36), ("L4.H16", 132.66),
                          ("L0.H1", 119.02), ("L2.H30", 118.58)]},
}
PAIRS = {"gpt2": ("gpt2", "distilgpt2"), "bert": ("bert-base-uncased", "distilbert-base-uncased"),
         "llama": ("meta-llama/Llama-3.1-8B", "nvidia/Llama-3.1-Minitron-4B-Depth-Base")}


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def _ref(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else format("–", fmt.split(".")[0])


def _nodes(pairs) -> str:
    return ", ".join(f"{n} {v:.1f}%" for n, v in pairs)


def llama_drop_one(r: dict) -> str:
    """kdmech's drop-one numbers (its influence, `ablation` of the run) beside the authors' Llama
    scores: per model the MLPs' mean drop and largest drops, and the heads' largest drops."""
    lines = [f"drop-one, |100 − retained| ({r['influence']['ablation']}-ablation in kdmech; zero in the "
             f"authors' code, heads zeroed on o_proj's output) — kdmech beside the authors' Llama scores"]
    for who in ("teacher", "student"):
        infl, ref = r["influence"][who], REFERENCE_LLAMA[who]
        retained = r["influence"]["retained"][who]
        heads = sorted((n for n in infl if ".H" in n), key=lambda n: -infl[n])[:6]
        mlps = sorted((n for n in infl if n.endswith(".MLP")), key=lambda n: -infl[n])[:4]
        mlp_mean = sum(infl[n] for n in infl if n.endswith(".MLP")) / max(1, sum(n.endswith(".MLP") for n in infl))
        lines += [f"{who}: MLP mean drop {mlp_mean:.2f} (authors {ref['mlp_mean_drop']:.2f})",
                  f"  MLPs  kdmech  {_nodes((n, retained[n]) for n in mlps)}", f"        authors {_nodes(ref['mlps'])}",
                  f"  heads kdmech  {_nodes((n, retained[n]) for n in heads)}",
                  f"        authors {_nodes(ref['heads'])}"]
    return "\n".join(lines)


def report(r: dict, family: str = "gpt2") -> str:
    ref = REFERENCES[family]
    lines = []
    if family == "llama":
        lines += [llama_drop_one(r), ""]
    if "circuit" in r:
        lines += _circuits(r, family) + [""]
    lines += _sensitivity(r, ref) + [""]
    a = r["alignment"]
    lines.append(f"alignment A = {a['A']:.3f} [{a['ci95']['A'][0]:.3f}, {a['ci95']['A'][1]:.3f}] "
                 f"(heads {a['A_heads']:.3f}, MLPs {a['A_mlp']:.3f}); paper: {ref['A']}")
    return "\n".join(lines)


def _circuits(r: dict, family: str) -> list[str]:
    lines = []
    edges = lambda c: len(c["edges"]) if c.get("edges_pruned", True) else "not pruned"  # noqa: E731
    t_c = next(c for c in r["circuit"]["teacher"]["circuits"] if abs(c["threshold"] - 0.2) < 1e-9)
    s_c = next(c for c in r["circuit"]["student"]["circuits"] if abs(c["threshold"] - 0.2) < 1e-9)
    lines.append(f"teacher circuit (T=0.20): {len([n for n in t_c['nodes'] if '.H' in n])} heads "
                 f"{[n for n in t_c['nodes'] if '.H' in n]}")
    lines.append(f"  MLPs {[n for n in t_c['nodes'] if n.endswith('.MLP')]}; edges {edges(t_c)}; "
                 f"completeness {t_c['completeness']:.1f}%, faithfulness {t_c['faithfulness']:.1f}%")
    if family == "gpt2":
        lines.append(f"  reference (Lan et al.): heads {REFERENCE_HEADS}, MLPs 0-11 except 5; Jaccard "
                     f"{jaccard(t_c['nodes'], REFERENCE_HEADS + REFERENCE_MLPS):.2f}")
    if t_c.get("edges_note"):
        lines.append(f"  {t_c['edges_note']}")
    lines.append(f"student circuit (T=0.20): {[n for n in s_c['nodes']]}; edges {edges(s_c)}; "
                 f"completeness {s_c['completeness']:.1f}%")
    return lines


def _sensitivity(r: dict, ref: dict) -> list[str]:
    s = r["sensitivity"]
    lines = []
    lines.append(f"{'heads':<10}{'mean drop':>12}{'(paper)':>9}{'worst drop':>12}{'(paper)':>9}  worst node")
    for who in ("teacher", "student"):
        h = s[who]["heads"]
        lines.append(f"{who:<10}{h['mean']:>12.2f}{_ref(ref.get(who + '_mean_drop'), '>9.2f')}"
                     f"{h['worst']:>12.1f}{_ref(ref.get(who + '_worst_drop'), '>9.1f')}  {h['worst_node']}")
    for who in ("teacher", "student"):
        m = s[who]["mlps"]
        lines.append(f"{who + ' MLP':<10}{m['mean']:>12.2f}{'':>9}{m['worst']:>12.1f}{'':>9}  {m['worst_node']}")
    lines.append(f"compression C = {s['compression']:.3f} (paper ≈ {ref['C']}), worst-drop ratio "
                 f"{s['worst_ratio']:.2f}{' (flag: > 2×)' if s['brittle'] else ''}")
    return lines


def _ci(mean: float, ci, fmt: str = ".2f") -> str:
    return f"{mean:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def side_by_side(results: dict, family: str = "gpt2") -> str:
    """Both presets' A (pooled, heads, MLPs) and sensitivity mean/worst beside the paper's
    numbers. `results`: {"kdmech": analysis, "authors": analysis}."""
    ref = REFERENCES[family]
    k, a = results["kdmech"], results["authors"]
    col = lambda v: f"{v:>12}"  # noqa: E731
    num = lambda v: col(f"{v:.3f}")  # noqa: E731
    lines = [f"{'the two presets':<28}{'kdmech':>12}{'authors':>12}   paper / authors' code",
             f"{'A (heads and MLPs)':<28}{num(k['alignment']['A'])}{num(a['alignment']['A'])}   {ref['A']}",
             f"{'A heads':<28}{num(k['alignment']['A_heads'])}{num(a['alignment']['A_heads'])}",
             f"{'A MLPs':<28}{num(k['alignment']['A_mlp'])}{num(a['alignment']['A_mlp'])}",
             f"{'  influence feeding A':<28}{col(k['alignment']['ablation'])}{col(a['alignment']['ablation'])}"
             f"   (ablation kind)",
             f"{'  MLP similarity':<28}{col(k['matching']['options']['mlp_similarity'])}"
             f"{col(a['matching']['options']['mlp_similarity'])}"]
    pooled = a["sensitivity"].get("pooled")
    if "sensitivity" not in k or not pooled:
        return "\n".join(lines)
    lines += ["", "sensitivity: kdmech = heads, D = |100 − retained| (docs/method.md §6); authors = heads and MLPs "
              "pooled, m = 100 − clamp(retained, 0, 100), bootstrap 10,000 (seed 42)"]
    lines.append(f"{'mean / worst drop':<18}{'kdmech, heads':>20}{'(paper)':>14}{'authors, pooled':>30}"
                 f"{'(authors data)':>30}")
    for who in ("teacher", "student"):
        h, p = k["sensitivity"][who]["heads"], pooled[who]
        paper = (f"{ref[who + '_mean_drop']:.2f} / {ref[who + '_worst_drop']:.1f}"
                 if who + "_mean_drop" in ref else "–")
        mine = f"{_ci(p['mean'], p['mean_ci95'])} / {p['worst']:.1f}"
        theirs = "–"
        if family == "gpt2":
            m, ci, w = REFERENCE_POOLED[who]
            theirs = f"{_ci(m, ci)} / {w:.1f}"
        kd = f"{h['mean']:.2f} / {h['worst']:.1f}"
        lines.append(f"{who:<18}{kd:>20}{paper:>14}{mine:>30}{theirs:>30}")
    d = k["sensitivity"]["delta_mean"]["heads"], k["sensitivity"]["delta_mean_ci95"]["heads"]
    theirs = _ci(*REFERENCE_POOLED["delta"]) if family == "gpt2" else "–"
    lines.append(f"{'Δ mean (s − t)':<18}{_ci(d[0], d[1]):>20}{'':>14}"
                 f"{_ci(pooled['delta_mean'], pooled['delta_mean_ci95']):>30}{theirs:>30}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(PAIRS), default="gpt2",
                    help="which of the paper's pairs (sets the default teacher and student)")
    ap.add_argument("--teacher", help="hub name or folder (default: the family's teacher)")
    ap.add_argument("--student", help="hub name or folder (default: the family's student)")
    ap.add_argument("--out", type=Path, default=Path("runs/replicate_paper"))
    ap.add_argument("--preset", choices=["both", *PRESETS], default="both",
                    help="analysis conventions: kdmech's, the authors', or both side by side")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="dtype of both models (default: bfloat16 for llama, float32 otherwise)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    teacher, student = args.teacher or PAIRS[args.family][0], args.student or PAIRS[args.family][1]
    presets = list(PRESETS) if args.preset == "both" else [args.preset]
    results, notes = {}, []
    for i, preset in enumerate(presets):
        # Circuits do not depend on the preset: the first run finds them.
        analyses = ["influence", "sensitivity", "matching"] + (["circuit"] if i == 0 else [])
        dtype = args.dtype or ("bfloat16" if args.family == "llama" else "float32")
        options = AnalyzeOptions(per_type=128, filter_prompts=True, thresholds=(0.2,), preset=preset, dtype=dtype)
        try:
            results[preset] = analyze(teacher, student, args.out / preset if i else args.out, "numerals",
                                      analyses, options, progress=not args.no_progress).to_json()
        except KdmechError as e:
            if i == 0:
                print(f"replicate_paper: error: {e}", file=sys.stderr)
                return 2
            notes.append(f"preset {preset!r} not run: {e}")  # e.g. its MLP score needs equal widths
    print(report(results[presets[0]], args.family))
    if len(results) == 2:
        print()
        print(side_by_side(results, args.family))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
