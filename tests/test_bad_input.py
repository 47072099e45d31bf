"""Bad input, refused early and briefly: every case exits 2 with exactly one
stderr line `kdmech: error: ...`, no traceback, and `--out` is not created (or, when it was an
existing file, left as it was). Everything runs in-process and nothing is trained: the checks
come before any model is loaded."""

import errno
import json
import shutil

import pytest

from kdmech.cli import main


@pytest.fixture(scope="module")
def models(tiny_gpt2, tokenizer, tmp_path_factory):
    """A good random GPT-2 folder and damaged or foreign variants of it."""
    root = tmp_path_factory.mktemp("models")
    good = root / "good"
    tiny_gpt2.save_pretrained(good)
    tokenizer.save_pretrained(good)
    weights = (good / "model.safetensors").read_bytes()

    def variant(name, **files):
        folder = root / name
        shutil.copytree(good, folder)
        for fname, content in files.items():
            path = folder / fname.replace("__", ".")
            if content is None:
                path.unlink()
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return folder

    config = json.loads((good / "config.json").read_text())
    folders = {
        "good": good,
        "truncated": variant("truncated", model__safetensors=weights[:100]),
        "garbage": variant("garbage", model__safetensors=b"not a safetensors file at all" * 10),
        "half": variant("half", model__safetensors=weights[: len(weights) // 2]),
        "bad_config": variant("bad_config", config__json="{not json"),
        "no_weights": variant("no_weights", model__safetensors=None),
        "neox": variant("neox", config__json=json.dumps({**config, "model_type": "gpt_neox",
                                                          "architectures": ["GPTNeoXForCausalLM"]})),
        "bert": variant("bert", config__json=json.dumps({**config, "model_type": "bert"})),
        "empty": root / "empty",
    }
    folders["empty"].mkdir()
    return folders


def _files(tmp_path):
    f = {"out": tmp_path / "out", "file": tmp_path / "a_file.txt", "empty": tmp_path / "empty_run",
         "foreign": tmp_path / "foreign", "garbled": tmp_path / "garbled", "badname": tmp_path / "badname"}
    f["file"].write_text("keep me")
    f["empty"].mkdir()
    for key, name, text in (("foreign", "step_0.json", '{"a": 1}'), ("garbled", "step_0.json", "not json"),
                            ("badname", "step_x.json", "{}")):
        (f[key] / "analysis" / "s").mkdir(parents=True)
        (f[key] / "analysis" / "s" / name).write_text(text)
    yamls = {
        "bad_yaml": "training: {steps: 4\n  oops",
        "typed_yaml": "training:\n  steps: many\n",
        "neg_yaml": "training:\n  steps: -3\n",
        "depth_yaml": "capacity:\n  depth: 2\n",
        "sweep_noparams": "method: grid\n",
        "sweep_method": "method: annealing\nparameters:\n  teacher: {value: tiny}\n",
        "sweep_key": "method: grid\nparameters:\n  teacher: {value: tiny}\n  capacity.dpth: {values: [0.5]}\n",
        "sweep_scalar": "method: grid\nparameters:\n  teacher: {value: tiny}\n  capacity.depth: 0.5\n",
        "sweep_steps": "method: grid\nparameters:\n  teacher: {value: tiny}\n  training.steps: {value: -5}\n",
        "sweep_depth": "method: grid\nparameters:\n  teacher: {value: tiny}\n  capacity.depth: {values: [0.5, 2]}\n",
        "sweep_noteacher": "method: grid\nparameters:\n  capacity.depth: {values: [0.5]}\n",
        "sweep_random": "method: random\nparameters:\n  teacher: {value: tiny}\n  capacity.depth: {min: 0.2, max: 0.8}\n",
    }
    for name, text in yamls.items():
        f[name] = tmp_path / f"{name}.yaml"
        f[name].write_text(text)
    return {k: str(v) for k, v in f.items()}


T, S, O = "--teacher", "--student", "--out"
GOOD = "{good}"
CASES = [
    # model files
    ("truncated safetensors", ["analyze", T, "{truncated}", S, GOOD, O, "{out}"], "model.safetensors is truncated"),
    ("garbage safetensors", ["analyze", T, GOOD, S, "{garbage}", O, "{out}"], "not a safetensors file"),
    ("half-copied safetensors", ["distill", T, "{half}", O, "{out}"], "fewer than its header announces"),
    ("config.json not JSON", ["distill", T, "{bad_config}", O, "{out}"], "config.json is not valid JSON"),
    ("folder without config", ["distill", T, "{empty}", O, "{out}"], "has no config.json"),
    ("folder without weights", ["distill", T, "{no_weights}", O, "{out}"], "has no weights"),
    ("teacher is a file", ["distill", T, "{file}", O, "{out}"], "is a file"),
    ("missing folder", ["analyze", T, "/no/such/model", S, GOOD, O, "{out}"], "is neither an existing folder"),
    ("unsupported architecture", ["distill", T, "{neox}", O, "{out}"], "is a 'gpt_neox'"),
    # names
    ("unknown task (analyze)", ["analyze", T, GOOD, S, GOOD, "--task", "nope", O, "{out}"], "task 'nope' is unknown"),
    ("unknown task (distill)", ["distill", T, GOOD, "--analysis.task", "nope", O, "{out}"], "task 'nope' is unknown"),
    ("task without cloze form", ["distill", T, "{bert}", "--analysis.task", "greater-than", O, "{out}"],
     "has no cloze ([MASK]) form"),
    ("unknown analysis", ["analyze", T, GOOD, S, GOOD, "--analyses", "[bogus]", O, "{out}"], "analysis 'bogus' is unknown"),
    ("unknown ablation", ["analyze", T, GOOD, S, GOOD, "--analysis.ablation", "foo", O, "{out}"], "Expected a typing.Literal['mean', 'zero', 'resample']. Got value: foo"),
    ("unknown matching direction", ["distill", T, GOOD, "--analysis.matching_direction", "sideways", O, "{out}"],
     "Got value: sideways"),
    ("unknown MLP similarity", ["distill", T, GOOD, "--analysis.mlp_similarity", "cosine", O, "{out}"],
     "Expected a typing.Literal['auto', 'svd3', 'cka', 'authors']. Got value: cosine"),
    ("unknown normalization", ["distill-shared", T, GOOD, "--capacities", '[{{"depth": 0.5}}]',
                               "--analysis.normalization", "l2", O, "{out}"], "Got value: l2"),
    ("unknown preset", ["analyze", T, GOOD, S, GOOD, "--analysis.preset", "bogus", O, "{out}"], "Expected a typing.Literal['kdmech', 'authors']. Got value: bogus"),
    ("unknown init", ["distill", T, GOOD, "--init", "weird", O, "{out}"], "Expected a typing.Literal"),
    ("unknown family", ["quickstart", O, "{out}", "--family", "gpt3"], "Got value: gpt3"),
    ("teacher of another family", ["quickstart", O, "{out}", "--family", "llama", "--teacher", GOOD],
     "is a gpt2 model, not of --family llama; pass --family gpt2"),
    # output folders
    ("--out is a file (analyze)", ["analyze", T, GOOD, S, GOOD, O, "{file}"], "is an existing file"),
    ("--out is a file (distill)", ["distill", T, GOOD, O, "{file}"], "is an existing file"),
    ("--out is a file (quickstart)", ["quickstart", O, "{file}"], "is an existing file"),
    ("--out is a file (train-teacher)", ["train-teacher", O, "{file}"], "is an existing file"),
    ("--out under a file", ["distill", T, GOOD, O, "{file}/run"], "which is a file"),
    # config files
    ("malformed YAML", ["distill", T, GOOD, "--config", "{bad_yaml}", O, "{out}"], "Problems parsing config"),
    ("wrongly typed YAML", ["distill", T, GOOD, "--config", "{typed_yaml}", O, "{out}"], 'Parser key "training.steps"'),
    ("negative steps YAML (distill)", ["distill", T, GOOD, "--config", "{neg_yaml}", O, "{out}"],
     "training.steps must be an integer ≥ 1, got -3"),
    ("negative steps YAML (train-teacher)", ["train-teacher", "--config", "{neg_yaml}", O, "{out}"], "must be ≥ 1, got -3"),
    ("capacity depth 2 YAML", ["distill", T, GOOD, "--config", "{depth_yaml}", O, "{out}"], "depth ratio 2.0 is outside"),
    ("zero batch size", ["distill-shared", T, GOOD, "--capacities", '[{{"depth": 0.5}}]', "--training.batch_size", "0",
                         O, "{out}"], "training.batch_size must be an integer ≥ 1"),
    # sweeps
    ("sweep without parameters", ["sweep", "{sweep_noparams}", O, "{out}"], "needs a 'parameters' mapping"),
    ("sweep unknown method", ["sweep", "{sweep_method}", O, "{out}"], "sweep method 'annealing' is unknown"),
    ("sweep unknown parameter", ["sweep", "{sweep_key}", O, "{out}"], "does not accept option 'dpth'"),
    ("sweep bare parameter value", ["sweep", "{sweep_scalar}", O, "{out}"], "parameter 'capacity.depth' is 0.5"),
    ("sweep negative steps", ["sweep", "{sweep_steps}", O, "{out}"], "training.steps must be an integer ≥ 1, got -5"),
    ("sweep depth out of range", ["sweep", "{sweep_depth}", O, "{out}"], "depth ratio 2.0 is outside"),
    ("sweep without teacher", ["sweep", "{sweep_noteacher}", O, "{out}"], "a sweep needs `teacher"),
    ("random sweep without count", ["sweep", "{sweep_random}", O, "{out}"], "needs a count"),
    ("missing sweep file", ["sweep", "{out}.yaml", O, "{out}"], "does not exist"),
    # report and timeline
    ("report of an empty folder", ["report", "{empty}"], "is not a kdmech run folder"),
    ("report of a model folder", ["report", GOOD], "is not a kdmech run folder"),
    ("report of a foreign record", ["report", "{foreign}"], "is not a kdmech checkpoint record (KeyError"),
    ("report of a missing folder", ["report", "{out}"], "does not exist"),
    ("timeline of a file", ["timeline", "{file}"], "is a file"),
    ("timeline of garbled JSON", ["timeline", "{garbled}"], "is not a kdmech checkpoint record (JSONDecodeError"),
    ("timeline of a misnamed record", ["timeline", "{badname}"], "is not named step_<N>.json"),
]


def _run_bad(capsys, args) -> str:
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("kdmech: error:"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("args,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_early_in_one_line(models, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fill = {**{k: str(v) for k, v in models.items()}, **_files(tmp_path)}
    err = _run_bad(capsys, [a.format(**fill) for a in args])
    assert needle in err, err
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "a_file.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", [
    ["distill", T, GOOD, O, "{out}"],
    ["analyze", T, GOOD, S, GOOD, O, "{out}"],
    ["train-teacher", O, "{out}"],
    ["quickstart", O, "{out}"],
], ids=["distill", "analyze", "train-teacher", "quickstart"])
@pytest.mark.parametrize("failure", [errno.EACCES, errno.ENOSPC, errno.EROFS], ids=["unwritable", "full", "read-only"])
def test_unwritable_or_full_out_is_refused_before_loading(models, tmp_path, capsys, monkeypatch, command, failure):
    """Root ignores permission bits, so the probe write is made to fail as the file system would."""
    import os

    import kdmech.validation as v

    def fail(folder):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(v, "_probe_write", fail)
    out = tmp_path / "out"
    err = _run_bad(capsys, [a.format(good=models["good"], out=out) for a in command])
    assert "cannot be written" in err and os.strerror(failure) in err, err
    assert not out.exists()


def test_chmod_read_only_folder_is_refused(tmp_path):
    """The real probe (no monkeypatch): a read-only folder as a normal user; as root, whose
    writes succeed anyway, the probe must leave nothing behind."""
    import os

    from kdmech.errors import KdmechError
    from kdmech.validation import check_out_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(KdmechError, match="cannot be written"):
                check_out_dir(ro / "run")
        else:
            check_out_dir(ro / "run")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import kdmech.commands.report as report

    def interrupted(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "check_run_folder", interrupted)
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 130
    assert err == "kdmech: interrupted"  # report has no --resume to point to


def test_an_os_error_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    """A disk that fills up after the checks passed: one line naming the file, exit 2."""
    import kdmech.commands.report as report

    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report.html"))

    monkeypatch.setattr(report, "check_run_folder", full)
    err = _run_bad(capsys, ["report", str(tmp_path)])
    assert "No space left on device" in err and "report.html" in err


def test_a_damaged_weights_file_past_the_checks_is_one_line(models, tmp_path, capsys, monkeypatch):
    """If the loader meets a damaged safetensors file the header check let through, the CLI
    still answers with one line."""
    import kdmech.commands.analyze as analyze
    from safetensors import SafetensorError

    def damaged(*a, **k):
        raise SafetensorError("Error while deserializing header: invalid header length")

    monkeypatch.setattr(analyze, "load_lm", damaged)
    err = _run_bad(capsys, ["analyze", T, str(models["good"]), S, str(models["good"]), O, str(tmp_path / "out")])
    assert "weights file is damaged" in err
    assert not (tmp_path / "out").exists()
