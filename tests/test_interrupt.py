"""Ctrl-C during a real run: a `kdmech distill` process sent SIGINT after its
first checkpoint ends with exit 130 and one stderr line, no traceback, and `--resume` carries
it on from that checkpoint to the end."""

import os
import signal
import subprocess
import sys
import time

import torch


def _distill(teacher, out, steps, *extra):
    return [sys.executable, "-m", "kdmech", "distill", "--teacher", str(teacher), "--out", str(out),
            "--capacity.depth", "0.5", "--training.steps", str(steps), "--training.n_train", "256",
            "--training.batch_size", "8", "--training.warmup_steps", "2", "--analysis.enabled", "false",
            "--analysis.every_n_steps", "3", "--wandb", "disabled", "--progress", "false", *extra]


def test_sigint_mid_run_is_one_line_exit_130_and_resumable(trained_teacher, tmp_path):
    teacher, _ = trained_teacher
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_distill(teacher, out, 100_000), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "d0.5-w1-h1" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[1] if proc.poll() is not None else "no checkpoint in 240 s"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines == ["kdmech: interrupted; rerun with --resume to continue"], err
    assert not (out / "students").exists()  # nothing half-written

    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert step >= 3 and step % 3 == 0
    done = subprocess.run(_distill(teacher, out, step + 3, "--resume"), env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == step + 3
    assert (out / "students" / "d0.5-w1-h1" / "model.safetensors").exists()
