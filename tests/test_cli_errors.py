"""Bad input: one line on stderr naming the value, exit status 2, no traceback, no output."""

import subprocess
import sys

import pytest

from kdmech.cli import main


@pytest.mark.parametrize("args,needle", [
    (["distill", "--teacher", "/no/such/folder", "--out", "{out}"], "'/no/such/folder' is neither"),
    (["distill", "--teacher", "gpt2", "--out", "{out}"], "'gpt2' is not in the local Hugging Face cache"),
    (["distill", "--teacher", "x", "--out", "{out}", "--capacity.depth", "1.5"], "depth ratio 1.5 is outside (0, 1]"),
    (["quickstart", "--out", "{out}", "--depths", "[0.5, 0]"], "depth ratio 0.0 is outside (0, 1]"),
    (["train-teacher", "--config", "{bad_yaml}", "--out", "{out}"], "Problems parsing config"),
    (["train-teacher", "--config", "{missing}", "--out", "{out}"], "does not exist"),
    (["train-teacher", "--out", "{out}", "--tiny.n_embd", "30"], "n_embd 30 is not divisible by n_head 4"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["quickstart", "--out", "{out}", "--family", "gpt3"], "Expected a typing.Literal['gpt2', 'bert', 'llama']. Got value: gpt3"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiny: {n_layer: 4\n  oops")
    fill = {"out": str(tmp_path / "out"), "bad_yaml": str(bad), "missing": str(tmp_path / "none.yaml")}
    code = main([a.format(**fill) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("kdmech: error:"), err
    assert needle in err
    assert not (tmp_path / "out").exists()


def test_task_whose_answers_are_not_single_tokens(tokenizer):
    from kdmech.errors import KdmechError
    from kdmech.tasks import PromptTexts, tokenize_prompts

    texts = PromptTexts("numerals", ["Van done in"], ["Van done in"], [" twentyone"], [" 4"])
    with pytest.raises(KdmechError, match="answer ' twentyone'.*single known tokens"):
        tokenize_prompts(texts, tokenizer)


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdmech", "distill", "--teacher", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "is neither" in proc.stderr
