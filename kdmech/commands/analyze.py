"""`kdmech analyze`: every analysis of a teacher–student pair on one task, with plots.

Writes DIR/analysis.json (keys: logit_diff, influence, sensitivity, circuit, matching,
alignment, noise, shift, probes — each with its options), DIR/prompts.json and PNGs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from kdmech.analysis.alignment import alignment_ci
from kdmech.analysis.analyze_result import AnalyzeResult
from kdmech.analysis.attribution.discovery import CircuitFinder
from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint, run_probes, shared_teacher_side
from kdmech.analysis.circuit import REFERENCE_THRESHOLD, threshold_sweep
from kdmech.analysis.noise import noise_curve
from kdmech.analysis.nodes import Node
from kdmech.analysis.options import AnalyzeOptions
from kdmech.analysis.conventions import alignment_influence
from kdmech.analysis.presets import alignment_side, get_preset
from kdmech.analysis.pruning_orders import pruning_orders
from kdmech.analysis.probes import first_token_divergence
from kdmech.analysis.sensitivity import pooled_sensitivity, sensitivity
from kdmech.analysis.shift import distribution_shift, rows_to_json
from kdmech.run_layout import ANALYSIS_JSON, PROMPTS_JSON, atomic_dir
from kdmech.errors import KdmechError
from kdmech.models import load_lm
from kdmech.report import plots
from kdmech.report.heatmap import save_influence_png
from kdmech.report.wandb_report import log_analysis
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.tasks.filtering import competent_prompts
from kdmech.tasks.forms import prompt_form
from kdmech.tasks.prompt_set import resolve_device
from kdmech.tracking import WandbMode, resolve_mode
from kdmech.validation import check_model, check_out_dir, check_task

ANALYSES = ("influence", "sensitivity", "circuit", "matching", "noise", "shift", "probes")


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class _Pair:
    """A loaded teacher–student pair and the prompts it is analysed on."""
    t_model: object
    t_tok: object
    s_model: object
    s_tok: object
    kind: str
    prompts: object
    competence: object
    teacher: str = ""
    student: str = ""


def analyze(teacher: str, student: str, out: Path, task: str = "numerals",
            analyses: list[str] = list(ANALYSES),  # noqa: B006 - jsonargparse needs a literal
            analysis: AnalyzeOptions = AnalyzeOptions(), progress: bool = True,
            device: str = "auto", wandb: WandbMode = "auto", project: str = "kdmech",
            entity: str | None = None, tags: list[str] | None = None) -> AnalyzeResult:
    """Analyse a teacher–student pair (influence, circuits, matching, alignment and more).

    Influence, sensitivity, circuits, matching, alignment, noise validation, distribution shift
    and mechanism probes.

    Args:
        teacher: Hub name or save_pretrained folder of the teacher.
        student: Hub name or save_pretrained folder of the student.
        out: Folder for analysis.json, prompts.json and the PNGs.
        task: numerals, numerals-any-start, numerals-words, numerals-months, numerals-days,
            ioi or greater-than; BERT pairs get the cloze form ([MASK]), which greater-than
            lacks.
        analyses: Which analyses to run (influence and matching always run).
        analysis: Settings of the individual analyses (`--analysis.*`, the same options as
            `kdmech distill --analysis.*` plus the sweep, noise and bootstrap settings).
        progress: Show a progress bar.
        device: Where both models run: auto (the first GPU when there is one), cpu, cuda,
            cuda:N, mps.
        wandb: W&B mode of the analysis' own run (job type analyze, files in DIR/wandb): auto
            (offline unless a key is configured), online, offline, disabled.
        project: W&B project.
        entity: W&B entity (user or team; default: the account's default entity).
        tags: W&B tags of the run.
    """
    options = dict(locals())  # this command's options, for its W&B run's config
    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        raise KdmechError(f"analysis {bad[0]!r} is unknown; accepted: {list(ANALYSES)}")
    preset = get_preset(analysis.preset)
    preset.mlp_method(analysis.mlp_similarity)  # refuses an unknown method before loading
    where = resolve_device(device)
    kind = check_model(teacher, "teacher")
    check_model(student, "student")
    check_task(task, kind)
    check_out_dir(out, replaced=True)
    resolve_mode(wandb)  # an unknown mode: refused before any work
    wanted = set(analyses) | {"influence", "matching"}
    start, out = time.perf_counter(), Path(out)
    pair = _load_pair(teacher, student, task, analysis, preset, where)
    result = _analyse(pair, wanted, analysis, preset, progress)
    result.wall_seconds = time.perf_counter() - start

    with atomic_dir(out) as tmp:
        pair.prompts.save(tmp / PROMPTS_JSON)
        result.save(tmp / ANALYSIS_JSON)
        _plots(tmp, result)
    signs = result.sign_range
    print(f"analysis of {student} against {teacher} on {result.task} ({result.n_prompts} "
          f"prompts) written to {out} in {result.wall_seconds:.0f}s: A "
          f"{result.A:.3f} [{result.A_ci95[0]:.3f}, {result.A_ci95[1]:.3f}]"
          + (f" (over eigenvector signs {signs[0]:.3f}–{signs[1]:.3f})" if signs else "")
          + f", worst drop student/teacher {result.worst_drop.ratio:.2f}")
    log_analysis(out, result, options, wandb, project, entity, tags)
    return result


def _analyse(pair: _Pair, wanted: set, analysis: AnalyzeOptions, preset, progress: bool) -> AnalyzeResult:
    """Both models' profiles, what every analysis holds, and the optional analyses `wanted`."""
    steps = {"profiles": 2, "sensitivity": 1, "circuit": 2 * len(analysis.thresholds),
             "noise": len(analysis.noise_sigmas) * analysis.noise_seeds, "shift": 8, "probes": 1}
    bar = tqdm(total=sum(v for k, v in steps.items() if k == "profiles" or k in wanted),
               desc="kdmech analyze", disable=not progress, unit="step")
    bar.set_postfix_str("teacher profile")
    shared = shared_teacher_side(pair.t_model, pair.prompts, analysis)  # one profile per teacher and process
    if "side" not in shared:
        shared["side"] = TeacherSide.build(pair.t_model, pair.t_tok, pair.prompts, analysis, pair.competence.to_json())
    side = shared["side"]
    tp = side.profile
    bar.update()
    bar.set_postfix_str("student profile")
    record, sp, student_side = analyze_checkpoint(side, pair.s_model, pair.s_tok, pair.prompts, step=0)
    sides = (side.alignment or tp, student_side or sp)  # what A read of each model
    bar.update()
    result = AnalyzeResult(
        teacher=pair.teacher, student=pair.student, task=pair.prompts.task, teacher_weak=pair.competence.weak,
        teacher_competence=pair.competence.to_json(), n_prompts=len(pair.prompts), options=asdict(analysis),
        analyses=sorted(wanted), **_pair_results(record.pair, tp, sp, sides, analysis, preset),
        **_optional_analyses(wanted, pair, tp, sp, record.pair, sides, analysis, preset, bar))
    bar.close()
    return result


def _load_pair(teacher: str, student: str, task: str, options: AnalyzeOptions, preset,
               device="cpu") -> _Pair:
    """Both models (one family), the task's prompts as both tokenize them, filtered by the
    teacher's competence (the gate refuses a weak teacher here)."""
    t_model, t_tok, kind = load_lm(teacher, options.dtype)
    s_model, s_tok, s_kind = load_lm(student, options.dtype)
    if s_kind != kind:
        raise KdmechError(f"teacher {teacher!r} is a {t_model.config.model_type} and student "
                          f"{student!r} a {s_model.config.model_type}; a pair must be one family")
    t_model, s_model = t_model.to(device), s_model.to(device)  # prompts follow (for_model)
    texts = get_task(task, cloze=prompt_form(kind).cloze, tokenizer=t_tok,
                     **preset.task_options(task, options.per_type)).prompts()
    prompts = check_same_tokenization(t_tok, s_tok, texts, kind)
    prompts, competence = competent_prompts(t_model, prompts, options.min_teacher_top1,
                                            options.min_prompts, options.allow_weak_teacher,
                                            options.filter_prompts,
                                            max_batch_tokens=options.max_batch_tokens)
    return _Pair(t_model, t_tok, s_model, s_tok, kind, prompts, competence, teacher, student)


def _pair_results(pair, tp, sp, sides, options: AnalyzeOptions, preset) -> dict:
    """What every analysis holds: metric, influence, matching (with both similarity matrices),
    alignment (with what it was computed from, its bootstrap interval over prompts and, under
    the authors' MLP score, its range over eigenvector signs) and the worst single-node drops."""
    conventions = preset.conventions(pair.task)
    ci = alignment_ci(pair.matching, sides[1].lds, sides[0].lds, options.normalization, options.n_boot,
                      options.seed, lambda inf, who: alignment_influence(inf, conventions, who),
                      conventions.double_count_below)
    return {
        "logit_diff": pair.logit_diff,
        "influence": {"ablation": pair.ablation, **pair.influence,
                      "retained": {"teacher": tp.influence.retained, "student": sp.influence.retained}},
        "matching": {"pairs": [m.to_json() for m in pair.matching], "merges": pair.merges,
                     "options": pair.options, "similarity": pair.similarity},
        "alignment": {**pair.alignment.to_json(), "ablation": pair.options["alignment_ablation"],
                      "ci95": ci, "inputs": pair.alignment_inputs, "sign_range": pair.sign_range,
                      "logit_diff": {"teacher": sides[0].metric, "student": sides[1].metric}},
        "worst_drop": pair.worst_drop}


def _optional_analyses(wanted: set, p: _Pair, tp, sp, pair, sides, options: AnalyzeOptions,
                       preset, bar) -> dict:
    """Sensitivity, circuits, noise validation, distribution shift and probes, as asked."""
    result = {}
    if "sensitivity" in wanted:
        bar.set_postfix_str("sensitivity")
        n_t, n_s = _count(p.t_model), _count(p.s_model)
        result["sensitivity"] = sensitivity(tp.influence, sp.influence, n_t, n_s, seed=options.seed).to_json()
        if preset.sensitivity == "authors":
            result["sensitivity"] |= {"convention": "authors", "pooled": pooled_sensitivity(
                tp.influence, sp.influence, n_t, n_s).to_json()}
        bar.update()
    if "circuit" in wanted:
        result["circuit"] = {}
        for who, prof in (("teacher", tp), ("student", sp)):
            bar.set_postfix_str(f"{who} circuits")
            finder = CircuitFinder.of(options, prof)
            result["circuit"][who] = threshold_sweep(prof.engine, options.thresholds, options.edges,
                                                     finder=finder).to_json()
            bar.update(len(options.thresholds))
            if options.pruning_orders:
                bar.set_postfix_str(f"{who} pruning orders")
                default = next(c["nodes"] for c in result["circuit"][who]["circuits"]
                               if abs(c["threshold"] - REFERENCE_THRESHOLD) < 1e-9)
                result["circuit"][who]["pruning_orders"] = pruning_orders(
                    prof.engine, REFERENCE_THRESHOLD, options.pruning_orders, options.seed, default)
    if "noise" in wanted:
        bar.set_postfix_str("noise validation")
        conventions = preset.conventions(p.prompts.task)
        curve = noise_curve(sides[0], p.s_model, p.s_tok, p.prompts,
                            options.noise_sigmas, tuple(range(options.noise_seeds)),
                            pair.options["alignment_ablation"], bar.update,
                            max_batch_tokens=options.max_batch_tokens,
                            side=lambda prof: alignment_side(prof, conventions, options.authors_sampling,
                                                             p.s_tok.bos_token_id),
                            direction=options.matching_direction,
                            mlp_method=preset.mlp_method(options.mlp_similarity),
                            normalization=options.normalization, conventions=conventions)
        result["noise"] = curve.to_json()
    if "shift" in wanted:
        bar.set_postfix_str("distribution shift")
        result["shift"] = rows_to_json(distribution_shift(p.t_model, p.s_model, p.t_tok, p.s_tok,
                                                          progress=bar.update, kind=p.kind,
                                                          max_batch_tokens=options.max_batch_tokens))
    if "probes" in wanted:
        bar.set_postfix_str("probes")
        result["probes"] = _probes(tp, sp, pair, p.t_tok)
        bar.update()
    return result


def _probes(tp, sp, pair, tokenizer) -> dict:
    out = {"teacher": run_probes(tp, tokenizer), "student": run_probes(sp, tokenizer)}
    out["first_token_divergence"] = first_token_divergence(tp, sp, pair.matching)
    return out


def _shape(influence: dict) -> tuple[int, int]:
    """(layers, heads) of a model, from the nodes its influence names."""
    nodes = [Node.parse(name) for name in influence]
    return max(n.layer for n in nodes) + 1, max(n.head for n in nodes if n.is_head) + 1


def _plots(folder: Path, r: AnalyzeResult) -> None:
    save_influence_png(folder / "influence.png", r.influence["teacher"], r.influence["student"],
                       f"{r.task}: single-node {r.influence['ablation']}-ablation influence")
    if r.circuit is not None:
        ref = {who: r.reference_circuit(who) for who in ("teacher", "student")}
        matched = {m["student"]: m["teacher"] for m in r.matching["pairs"]}
        shapes = {who: _shape(r.influence[who]) for who in ("teacher", "student")}
        plots.circuits_png(folder / "circuits.png", ref, shapes, matched)
    if r.sensitivity is not None:
        plots.sensitivity_png(folder / "sensitivity.png", r.influence["teacher"], r.influence["student"])
    if r.noise is not None:
        plots.noise_png(folder / "noise.png", r.noise)
    if r.shift is not None:
        plots.shift_png(folder / "shift.png", r.shift)
