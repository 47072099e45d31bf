"""Benchmark: circuit discovery by exact pruning against EAP and EAP-IG (verified exactly), side by side.

Part 1, scale (random weights; weight matrices drawn at std 0.3 as bench/analysis_scale.py
does, so every component moves the logits; random-token prompts of 16 tokens whose answer is the
model's own top-1 after the clean prompt and whose wrong answer its top-1 after the corrupted one
(`model_task`), so the circuit is not empty; mean ablation, T = 0.2, nodes and edges):
  - GPT-2-small shape: 12 layers × 12 heads × d 768, vocabulary 50,257;
  - a Llama shape with grouped-query attention (quick: 8 layers × 8 query heads in 2 KV groups
    × d 512; --full: 16 layers × 16 query heads in 4 KV groups × d 1024, the widest that
    leaves room for the model's four copies — bridge, runner, attribution — beside other work on a
    24 GiB machine), vocabulary 32,000.
  For each method: wall time (exact: node pruning, then path patching of every edge of its
  circuit — by default, at scale, of 200 of them drawn at random, their time extrapolated to all
  (`--exact_edges`), since a random model's circuit has thousands; eap/eap-ig: the node scores,
  then the whole verified discovery: the exact prefix checks, the exact pruning passes, the edge
  scores and the exact path patches of the edges checked) and the peak resident memory above the
  start of the method (sampled every 5 ms; on CUDA the peak allocated memory).
Part 2, agreement on the trained tiny teachers (the GPT-2 and the Llama quickstart teachers;
trained into runs/bench/teachers/ when no folder is given and none is found), 100 numeral
prompts the teacher gets right: Spearman and Kendall rank correlation of the node scores with
exact single-node influence, top-10 overlap, Jaccard of the verified circuit's nodes and edges
with exact pruning's.

Part 3, a trained teacher at scale: a GPT-2-small-shape teacher (12 × 12 × 768, the word
vocabulary) trained on the numeral task by the tiny teacher's recipe (`scale_teacher`), the part
2 comparison on `--prompts` of its prompts (`--skip_trained_scale` leaves it out).

Targets: eap-ig ≥ 20× faster than exact node + edge pruning at GPT-2-small shape; its
verified circuit's node Jaccard ≥ 0.8 against exact's on both trained teachers.

    python bench/discovery_scale.py           # quick (make bench): 24 prompts at scale, 200 exact edges
    python bench/discovery_scale.py --full    # 100 prompts, every exact edge, the larger Llama shape
                                              # (hours on 2 cores)
    python bench/discovery_scale.py --skip_scale   # part 2 only: seconds

On the 2-core CPU the quick run takes about 40 minutes: exact discovery at GPT-2-small shape
counts ≈ 1,000 s (its edge time extrapolated from 200 sampled edges; it runs in a few minutes),
and each attribution method runs about that long for real, because on these random-weight
models verification cannot save much: attribution's ranking is weak there (the
shortest passing prefix is the whole model, so exact pruning starts where §5.1 starts) and most
of the circuit's edges pass §5.2's rule (the circuit's own metric sits just above the limit, so
almost any edge whose patch lowers it is kept), and each kept edge needs its exact path patch.
The table's "candidate" and "edges checked" columns show it.
"""

import argparse
import os
import random
import threading
import time
from pathlib import Path

import torch

from kdmech.analysis import AblationKind, boot, corrupted_activations
from kdmech.analysis.ablation.engine import AblationEngine
from kdmech.analysis.attribution.discovery import CircuitFinder, circuit_agreement
from kdmech.analysis.circuit import EDGES, Circuit, path_patching, prune_nodes, retained_with_only
from kdmech.analysis.edges import Edge, upstream
from kdmech.analysis.profile import profile
from kdmech.models import build_word_tokenizer, load_causal_lm
from kdmech.tasks import NumeralTask, tokenize_prompts
from kdmech.tasks.filtering import filter_by_teacher
from kdmech.tasks.prompt_set import PromptSet, PromptTexts

METHODS = ("exact", "eap", "eap-ig")
THRESHOLD = 0.2


class Peak:
    """Peak resident memory (MB) above its value at entry, sampled every 5 ms by a thread (on
    CUDA: torch's peak allocated memory)."""

    def __enter__(self):
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _watch(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        if self.cuda:
            self.mb = (torch.cuda.max_memory_allocated() - self.start) / 2**20
            return
        self.stop.set()
        self.thread.join()
        self.mb = (max(self.peak, self._rss()) - self.start) / 2**20


def model_task(model, n: int, t: int = 16, seed: int = 0) -> PromptSet:
    """Random-token prompts read by the model itself: a clean and a corrupted prompt of t random
    tokens; the answer is the model's top-1 token after the clean prompt, the wrong answer its
    top-1 after the corrupted one (its runner-up when they agree). The intact LD is then large,
    and with every node ablated the output no longer depends on the prompt, so the circuit is
    not empty and has edges to prune."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    clean, corrupted = torch.randint(0, vocab, (n, t), generator=g), torch.randint(0, vocab, (n, t), generator=g)
    with torch.no_grad():
        top_clean = model(input_ids=clean).logits[:, -1].topk(2).indices
        top_corr = model(input_ids=corrupted).logits[:, -1].topk(2).indices
    answers = top_clean[:, 0]
    wrongs = torch.where(top_corr[:, 0] == answers, top_corr[:, 1], top_corr[:, 0])
    texts = PromptTexts("random", ["?"] * n, ["?"] * n, ["?"] * n, ["?"] * n)
    return PromptSet(texts, clean, corrupted, answers, wrongs, torch.full((n,), t - 1))


def widened(model, std: float = 0.3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval().requires_grad_(False)


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel
    return widened(GPT2LMHeadModel(GPT2Config(n_positions=64)))


def llama(layers: int, heads: int, kv: int, d: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from kdmech.models.tiny_llama import gated_mlp_width
    cfg = LlamaConfig(vocab_size=32000, hidden_size=d, intermediate_size=gated_mlp_width(d), num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, head_dim=d // heads,
                      max_position_embeddings=64, tie_word_embeddings=False, attn_implementation="eager")
    return widened(LlamaForCausalLM(cfg))


def scale_engine(model, n: int, max_batch_tokens: int) -> AblationEngine:
    """A mean-ablation engine on the model's own random-token task (`model_task`)."""
    prompts = model_task(model, n)
    bridged = boot(model, build_word_tokenizer())
    return AblationEngine(bridged, prompts, AblationKind.MEAN, corrupted_activations(bridged, prompts, keep_full=True),
                          max_batch_tokens=max_batch_tokens)


def exact_discovery(engine: AblationEngine, edge_sample: int) -> tuple[Circuit, float, int]:
    """Exact node pruning, then exact path patching of every edge of the circuit, or of
    `edge_sample` of them drawn at random (seed 0) with the edge time extrapolated to all of them
    (per-edge time × edges). (circuit — its edges those kept among the patched, `edges_pruned`
    only when all were —, seconds, edges of the node circuit)."""
    start = time.perf_counter()
    nodes, passes = prune_nodes(engine, THRESHOLD)
    node_s = time.perf_counter() - start
    runner = engine.residual_runner(EDGES)
    edges = [Edge(s, r) for s in sorted(nodes) for r in runner.receivers(nodes) if upstream(s, r)]
    sample = edges if not edge_sample or edge_sample >= len(edges) else random.Random(0).sample(edges, edge_sample)
    start = time.perf_counter()
    scored = path_patching(engine, nodes, only=set(sample)) if sample else None
    edge_s = (time.perf_counter() - start) * len(edges) / max(len(sample), 1)
    limit = (1 - THRESHOLD) * engine.full_metric
    kept = [e for e, ld in scored.scores.items() if ld < limit] if scored else []
    circuit = Circuit(THRESHOLD, [n.name for n in sorted(nodes)], kept, retained_with_only(engine, nodes),
                      passes=passes, edges_pruned=len(sample) == len(edges))
    return circuit, node_s + edge_s, len(edges)


def run_method(engine: AblationEngine, method: str, ig_steps: int, influence=None, edge_sample: int = 0) -> dict:
    """One discovery, timed; attribution's node scores timed apart too."""
    finder = CircuitFinder(method, ig_steps, influence={id(engine): influence} if influence else None)
    note = ""
    with Peak() as peak:
        start = time.perf_counter()
        scores_s = None
        if method == "exact":
            circuit, seconds, n_edges = exact_discovery(engine, edge_sample)
            if not circuit.edges_pruned:
                note = f" (edges: {edge_sample} of {n_edges} path-patched, their time extrapolated to all)"
        else:
            finder.scores(engine, method)
            scores_s = time.perf_counter() - start
            circuit = finder(engine, THRESHOLD, True)
            seconds = time.perf_counter() - start
    d = circuit.discovery
    checks = d.get("prefix_checks", 0) + d.get("pruning_checks", 0) + d.get("edges_checked", 0)
    print(f"    {method}: {seconds:.1f} s{note}, peak +{peak.mb:.0f} MB, {len(circuit.nodes)} nodes, "
          f"{len(circuit.edges)} edges, completeness {circuit.completeness:.1f}%", flush=True)
    return {"method": method, "seconds": seconds, "scores_s": scores_s, "peak_mb": peak.mb, "circuit": circuit,
            "checks": checks if method != "exact" else None, "note": note}


def scale_part(shapes, n: int, ig_steps: int, max_batch_tokens: int, edge_sample: int) -> list[tuple]:
    rows = []
    for name, build in shapes:
        model = build()
        engine = scale_engine(model, n, max_batch_tokens)
        engine.paired_corrupted()
        engine.residual_runner(EDGES)  # set-up every method shares, outside the timings
        b = engine.bridged
        print(f"  {name}: {b.n_layers} layers × {b.n_heads} heads × d {b.d_model}, {n} prompts × 16 tokens, "
              f"LD {engine.full_metric:+.2f}", flush=True)
        results = {m: run_method(engine, m, ig_steps, edge_sample=edge_sample) for m in METHODS}
        exact = results["exact"]
        for m in METHODS:
            r = results[m]
            rows.append((name, m, r, exact["seconds"] / r["seconds"],
                         circuit_agreement(r["circuit"], exact["circuit"]) if m != "exact" else None))
        del engine, model
    return rows


def teacher_folder(given: str | None, family: str) -> Path:
    """The trained tiny teacher of `family`: `given`, the quickstart's, or one trained here."""
    from kdmech.teacher import TeacherTraining, train_teacher

    quickstart = Path("runs/quickstart" if family == "gpt2" else f"runs/quickstart-{family}") / "teacher"
    for folder in (Path(given) if given else None, quickstart, Path(f"runs/bench/teachers/{family}")):
        if folder is not None and (folder / "config.json").exists():
            return folder
    out = Path(f"runs/bench/teachers/{family}")
    print(f"  training the tiny {family} quickstart teacher into {out}", flush=True)
    train_teacher(out, training=TeacherTraining(), wandb="disabled", progress=False, family=family)
    return out


SCALE_TEACHER = Path("runs/bench/teachers/gpt2-12x12x768")
SCALE_TEACHER_NAME = "gpt2 12×12×768"


def scale_teacher() -> Path:
    """A teacher of GPT-2-small shape (12 × 12 × 768, the word vocabulary) trained on the numeral
    task by the tiny teacher's recipe (batch 32, lr 5e-4, until held-out top-1 ≥ 0.95; on the
    2-core machine: 50 steps, top-1 1.000, LD 9.25, 157 s), kept in SCALE_TEACHER."""
    from kdmech.models.tiny import TinySpec
    from kdmech.teacher import TeacherTraining, train_teacher

    if not (SCALE_TEACHER / "config.json").exists():
        print(f"  training a GPT-2-small-shape teacher into {SCALE_TEACHER}", flush=True)
        train_teacher(SCALE_TEACHER, tiny=TinySpec(n_layer=12, n_head=12, n_embd=768), family="gpt2",
                      wandb="disabled", progress=False,
                      training=TeacherTraining(steps=400, batch_size=32, lr=5e-4, warmup_steps=50, val_every=50,
                                               target_top1=0.95))
    return SCALE_TEACHER


def agreement_part(teachers: dict[str, Path], n: int, ig_steps: int) -> list[tuple]:
    rows = []
    for family, folder in teachers.items():
        model, tok = load_causal_lm(str(folder))
        model = model.eval().requires_grad_(False)
        prompts = filter_by_teacher(model, tokenize_prompts(NumeralTask(per_type=-(-n // 2)).prompts(), tok))
        prompts = prompts.subset(list(range(min(n, len(prompts)))))
        prof = profile(model, tok, prompts, "mean", keep_corrupted=True)
        print(f"  {family} teacher ({folder}): {len(prompts)} prompts, LD {prof.engine.full_metric:+.2f}", flush=True)
        results = {m: run_method(prof.engine, m, ig_steps, prof.influence) for m in METHODS}
        exact = results["exact"]
        for m in METHODS[1:]:
            r = results[m]
            rows.append((family, m, r, exact["seconds"] / r["seconds"],
                         {**r["circuit"].discovery["agreement"], **circuit_agreement(r["circuit"], exact["circuit"]),
                          "prompts": len(prompts)}))
    return rows


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def print_tables(scale_rows, agreement_rows, n_scale: int, ig_steps: int):
    print(f"\n| discovery_scale ({n_scale} prompts, T = {THRESHOLD}, ig_steps {ig_steps}) | method | wall s | "
          "node scores s | × faster than exact | peak MB | nodes | edges | completeness % | exact checks | "
          "candidate nodes | edges checked | Jaccard nodes vs exact | Jaccard edges vs exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape, m, r, speed, agree in scale_rows:
        c = r["circuit"]
        print(f"| {shape} | {m} | {r['seconds']:.1f}{'*' if r['note'] else ''} | {fmt(r['scores_s'], '.1f')} | "
              f"{speed:.1f} | "
              f"{r['peak_mb']:.0f} | {len(c.nodes)} | {len(c.edges)} | {c.completeness:.1f} | "
              f"{fmt(r['checks'], 'd')} | {fmt(c.discovery.get('candidate_nodes'), 'd')} | "
              f"{fmt(c.discovery.get('edges_checked'), 'd')} | "
              f"{fmt(agree and agree['jaccard_nodes'])} | {fmt(agree and agree['jaccard_edges'])} |")
    if any(r[2]["note"] for r in scale_rows):
        print("* exact edge pruning timed on a random sample of the circuit's edges and extrapolated to all of them; "
              "the exact edge set (and the edge Jaccard) is then not known")
    print("\n| trained teacher | prompts | method | wall s | × faster than exact | Spearman | Kendall | "
          "top-10 overlap | Jaccard nodes | Jaccard edges | nodes (exact) | edges (exact) | exact checks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for family, m, r, speed, a in agreement_rows:
        print(f"| {family} | {a['prompts']} | {m} | {r['seconds']:.1f} | {speed:.1f} | {a['spearman']:.3f} | "
              f"{a['kendall']:.3f} | "
              f"{a['top_k_overlap']:.2f} | {a['jaccard_nodes']:.2f} | {fmt(a['jaccard_edges'])} | "
              f"{len(r['circuit'].nodes)} ({len(a['exact_nodes'])}) | {len(r['circuit'].edges)} ({a['exact_edges']}) | "
              f"{fmt(r['checks'], 'd')} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="100 prompts at scale, the larger Llama shape")
    ap.add_argument("--prompts", type=int, default=None, help="prompts at scale: default 24, or 100 with --full")
    ap.add_argument("--ig_steps", type=int, default=5)
    ap.add_argument("--max_batch_tokens", type=int, default=0, help="memory budget of every forward (0: none)")
    ap.add_argument("--exact_edges", type=int, default=None,
                    help="at scale, exact path patching of this many of the circuit's edges drawn at random, its "
                         "time extrapolated to all (0: every edge; default 200, or 0 with --full)")
    ap.add_argument("--gpt2_teacher", default=None, help="trained GPT-2 quickstart teacher folder")
    ap.add_argument("--llama_teacher", default=None, help="trained Llama quickstart teacher folder")
    ap.add_argument("--skip_scale", action="store_true")
    ap.add_argument("--skip_teachers", action="store_true")
    ap.add_argument("--skip_trained_scale", action="store_true",
                    help="no GPT-2-small-shape teacher trained on the task (part 3)")
    args = ap.parse_args()
    n = args.prompts or (100 if args.full else 24)
    shape = (16, 16, 4, 1024) if args.full else (8, 8, 2, 512)
    shapes = [("GPT-2 small 12×12×768", gpt2_small),
              (f"Llama {shape[0]}×{shape[1]}q/{shape[2]}kv×{shape[3]}", lambda: llama(*shape))]
    print(f"{torch.get_num_threads()} threads; part 1: scale", flush=True)
    exact_edges = args.exact_edges if args.exact_edges is not None else (0 if args.full else 200)
    scale_rows = [] if args.skip_scale else scale_part(shapes, n, args.ig_steps, args.max_batch_tokens, exact_edges)
    print("part 2: trained tiny teachers", flush=True)
    teachers = {} if args.skip_teachers else {
        "gpt2": teacher_folder(args.gpt2_teacher, "gpt2"), "llama": teacher_folder(args.llama_teacher, "llama")}
    agreement_rows = agreement_part(teachers, 100, args.ig_steps)
    if not args.skip_trained_scale:
        print("part 3: a trained teacher at GPT-2-small shape", flush=True)
        agreement_rows += agreement_part({SCALE_TEACHER_NAME: scale_teacher()}, n, args.ig_steps)
    print_tables(scale_rows, agreement_rows, n, args.ig_steps)
    speed = {r[0]: r[3] for r in scale_rows if r[1] == "eap-ig"}
    jac = {r[0]: r[4]["jaccard_nodes"] for r in agreement_rows if r[1] == "eap-ig"}
    trained = {r[0]: r[3] for r in agreement_rows if r[1] == "eap-ig" and r[0] == SCALE_TEACHER_NAME}
    gpt2 = speed.get(shapes[0][0])
    print("BENCH discovery_scale: " + ", ".join(
        ([f"eap-ig {gpt2:.1f}× faster than exact at GPT-2-small shape ({n} prompts; target ≥ 20×)"]
         if gpt2 is not None else [])
        + [f"Llama shape {v:.1f}×" for k, v in speed.items() if k != shapes[0][0]]
        + [f"trained {k} teacher {v:.1f}×" for k, v in trained.items()]
        + [f"eap-ig Jaccard vs exact on the trained {k} teacher {v:.2f}" for k, v in jac.items()]
        + (["(target ≥ 0.8)"] if jac else [])))


if __name__ == "__main__":
    main()
