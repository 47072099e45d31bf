"""Security basics: no code from a model folder runs, and no API key or token
ever lands in a file a run writes."""

import json

from kdmech.cli import main
from kdmech.models import load_lm


def test_remote_code_in_a_model_folder_never_runs(tiny_gpt2, tokenizer, tmp_path):
    """A config whose auto_map points at Python files (what `trust_remote_code` would import)
    loads as the built-in GPT-2, and the files' code is never executed."""
    folder = tmp_path / "model"
    tiny_gpt2.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    marker = tmp_path / "remote_code_ran"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(code + "from transformers import *\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    model, _, kind = load_lm(folder)
    assert kind == "causal" and type(model).__name__ == "GPT2LMHeadModel"
    assert not marker.exists()


def test_no_api_key_or_token_in_any_file_a_run_writes(trained_teacher, tmp_path, monkeypatch):
    """A W&B API key and a Hugging Face token planted in the environment appear in none of the
    files a distillation with checkpoint analyses (offline W&B run included) and its report
    write."""
    teacher, _ = trained_teacher
    secrets = {"WANDB_API_KEY": "k" * 8 + "0123456789abcdef0123456789abcdef",
               "HF_TOKEN": "hf_plantedTokenValue0123456789"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(run), "--capacity.depth", "0.5",
                 "--training.steps", "4", "--training.n_train", "64", "--training.batch_size", "8",
                 "--training.warmup_steps", "1", "--analysis.every_n_steps", "4",
                 "--analysis.per_type", "32", "--analysis.min_prompts", "8",
                 "--wandb", "offline", "--progress", "false"]) == 0
    assert main(["report", str(run), "--wandb", "offline"]) == 0
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "report.html" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} found in {path}"
