"""Nothing lost, nothing doubled: a `kdmech distill` killed with SIGKILL and
resumed ends with an uninterrupted run's weights, analyses and W&B history; the same command
twice gives the same bits; distill-shared, train-teacher and the BERT masker resume exactly;
a damaged checkpoint is detected. Two other ways of running the same distillation must give the
same bits too, so they are checked against the same uninterrupted reference here: analyses in a
background thread, and a teacher profile shared with an earlier run in the process.

Teachers here are tiny and untrained (the analyses run with the competence gate off): resuming
is about bits, not skill."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
from kdmech.models import CapacitySpec, TinyGPT2Spec, build_word_tokenizer
from kdmech.models.tiny import TinyBertSpec
from kdmech.tracking import STEP_KEY, offline_folders, wait_for_offline_run
from kdmech.tracking import offline_history as _offline_history

NAME = "d0.5-w1-h1"
STEPS, EVERY = 16, 4
TRAINING = DistillTraining(steps=STEPS, batch_size=8, n_train=64, warmup_steps=2, seed=1)
ANALYSIS = AnalysisSchedule(every_n_steps=EVERY, per_type=4, min_prompts=0, allow_weak_teacher=True,
                            filter_prompts=False)
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Random tiny GPT-2 and BERT teachers (2 layers, 2 heads, 16 wide), saved as a user's."""
    tok = build_word_tokenizer()
    folders = {}
    for family, spec in (("gpt2", TinyGPT2Spec(2, 2, 16, 64)), ("bert", TinyBertSpec(2, 2, 16, 64))):
        folders[family] = tmp_path_factory.mktemp(family)
        spec.build(tok, seed=0).save_pretrained(folders[family])
        tok.save_pretrained(folders[family])
    return folders


def _cli(teacher, out, *extra) -> list[str]:
    """The `kdmech distill` command of `_distill`."""
    return [sys.executable, "-m", "kdmech", "distill", "--teacher", str(teacher), "--out", str(out),
            "--capacity.depth", "0.5", "--training.steps", str(STEPS), "--training.batch_size", "8",
            "--training.n_train", "64", "--training.warmup_steps", "2", "--training.seed", "1",
            "--analysis.every_n_steps", str(EVERY), "--analysis.per_type", "4", "--analysis.min_prompts", "0",
            "--analysis.allow_weak_teacher", "true", "--analysis.filter_prompts", "false",
            "--wandb", "offline", "--progress", "false", *extra]


@contextmanager
def _one_thread():
    """Run in this process with the subprocesses' thread count (OMP_NUM_THREADS=1), so the
    same arithmetic gives the same bits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _distill(teacher, out, **kw):
    with _one_thread():
        return distill(str(teacher), out, CapacitySpec(depth=0.5),
                       **{"training": TRAINING, "analysis": ANALYSIS, "wandb": "offline", "progress": False, **kw})


def _kill_after_second_checkpoint(teacher, out) -> None:
    """Start the command, SIGKILL it as soon as its second checkpoint is on disk (the first is
    rotated to previous.ckpt as the second is written), rerun it with --resume."""
    # a fresh environment, as a user's shell: not this process's W&B service (WANDB_SERVICE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", WANDB_SILENT="true")
    proc = subprocess.Popen(_cli(teacher, out), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / NAME
    deadline = time.monotonic() + 240
    while not ((ckpt / "previous.ckpt").exists() and (ckpt / "last.ckpt").exists()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no second checkpoint in 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "students").exists()
    done = subprocess.run(_cli(teacher, out, "--resume"), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def offline_history(folder) -> list[dict]:
    """The rows of a finished offline run (wandb.finish() may return before they are on disk)."""
    assert wait_for_offline_run(folder), f"{folder} has no exit record"
    return _offline_history(folder)


def _weights(out) -> dict:
    return load_file(out / "students" / NAME / "model.safetensors")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _analysis_files(out) -> dict[str, str]:
    folder = out / "analysis" / NAME
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix in (".json", ".csv")}


def _wandb_rows(out) -> list[tuple]:
    """(step, key, value) of every value the run's one offline folder holds (media by type and
    size), sorted; and that folder."""
    run_id = (out / "checkpoints" / NAME / "wandb_run_id").read_text().strip()
    (folder,) = offline_folders(out, run_id)
    assert sorted((out / "wandb").glob("offline-run-*")) == [folder]
    rows = []
    for row in offline_history(folder):
        for key, value in row.items():
            if key != STEP_KEY:
                if isinstance(value, dict):  # media: what was logged, not where W&B put it
                    value = {k: v for k, v in value.items() if k in ("_type", "count", "nrows", "ncols", "width", "height")}
                rows.append((row[STEP_KEY], key, json.dumps(value, sort_keys=True)))
    return sorted(rows)


@pytest.fixture(scope="module")
def uninterrupted(teachers, tmp_path_factory):
    """The reference: the command run once, without interruption, per family (made on demand)."""
    runs = {}

    def get(family):
        if family not in runs:
            out = tmp_path_factory.mktemp(f"uninterrupted-{family}")
            assert _distill(teachers[family], out).steps == list(range(0, STEPS + 1, EVERY))
            runs[family] = out
        return runs[family]

    return get


def _check_killed_run(teachers, uninterrupted, family, tmp_path):
    a, b = uninterrupted(family), tmp_path / "killed"
    _kill_after_second_checkpoint(teachers[family], b)
    _assert_same_weights(_weights(a), _weights(b))
    # every checkpoint step once in the history, with the same numbers; the same JSON files
    files_a, files_b = _analysis_files(a), _analysis_files(b)
    assert files_a == files_b
    steps = [int(line.split(",")[0]) for line in files_b["steps.csv"].splitlines()[1:]]
    assert steps == list(range(0, STEPS + 1, EVERY))
    # W&B: one offline run holding every logged row once, as the uninterrupted run logged it
    rows_a, rows_b = _wandb_rows(a), _wandb_rows(b)
    assert rows_b == rows_a
    # each key once per step (Lightning adds "epoch" to each row it logs, train and validation)
    assert len({(s, k) for s, k, _ in rows_b if k != "epoch"}) == len([k for _, k, _ in rows_b if k != "epoch"])
    analysed = sorted(s for s, k, _ in rows_b if k == "analysis/A")
    assert analysed == list(range(0, STEPS + 1, EVERY))
    assert len(list((b / "wandb" / "superseded").glob("offline-run-*"))) == 1  # the killed run's folder
    return b


def test_killed_gpt2_distill_resumes_to_the_uninterrupted_weights_history_and_wandb_run(teachers, uninterrupted,
                                                                                      tmp_path):
    out = _check_killed_run(teachers, uninterrupted, "gpt2", tmp_path)
    # what the README tells users to run uploads one run
    runs = [str(p) for p in (out / "wandb").glob("offline-run-*")]
    sync = subprocess.run([str(Path(sys.executable).with_name("wandb")), "sync", "--dry-run", *runs],
                          capture_output=True, text=True, timeout=120)
    assert "Would sync 1 run(s)" in sync.stdout + sync.stderr, sync.stdout + sync.stderr


@pytest.mark.slow
def test_killed_bert_distill_resumes_to_the_uninterrupted_weights_history_and_wandb_run(teachers, uninterrupted,
                                                                                      tmp_path):
    _check_killed_run(teachers, uninterrupted, "bert", tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_resumed_distill_equals_an_uninterrupted_one(teachers, uninterrupted, tmp_path, family):
    """Stopped at step 10 (mid-epoch: 8 batches an epoch) and resumed to the end: the weights
    and analyses of one run. For BERT the masking of every step is its own, drawn from (seed,
    step), so nothing depends on how many batches the masker saw before."""
    out = tmp_path / "two"
    _distill(teachers[family], out, training=replace(TRAINING, steps=10), wandb="disabled",
             analysis=replace(ANALYSIS, every_n_steps=5, circuits=False))
    assert _distill(teachers[family], out, wandb="disabled", resume=True).steps == [10, 12, 16]
    _assert_same_weights(_weights(uninterrupted(family)), _weights(out))
    for name in ("step_12.json", "step_16.json", "circuit_step_16.json"):
        assert _analysis_files(uninterrupted(family))[name] == _analysis_files(out)[name]


def test_same_command_twice_gives_the_same_bits(teachers, uninterrupted, tmp_path):
    _distill(teachers["gpt2"], tmp_path / "again", wandb="disabled")
    _assert_same_weights(_weights(uninterrupted("gpt2")), _weights(tmp_path / "again"))
    files = _analysis_files(uninterrupted("gpt2"))
    assert files == _analysis_files(tmp_path / "again") and f"circuit_step_{STEPS}.json" in files


def test_distill_shared_resumes_exactly(teachers, tmp_path):
    from dataclasses import replace

    from kdmech.commands.distill_shared import distill_shared

    capacities = [CapacitySpec(depth=0.5), CapacitySpec(depth=0.5, width=0.5, heads=0.5)]
    off = AnalysisSchedule(enabled=False, filter_prompts=False, every_n_steps=EVERY)
    kw = dict(analysis=off, wandb="disabled", progress=False)
    with _one_thread():
        distill_shared(str(teachers["gpt2"]), tmp_path / "one", capacities, training=TRAINING, **kw)
        distill_shared(str(teachers["gpt2"]), tmp_path / "two", capacities, training=replace(TRAINING, steps=9), **kw)
        distill_shared(str(teachers["gpt2"]), tmp_path / "two", capacities, training=TRAINING, resume=True, **kw)
    for c in capacities:
        a = load_file(tmp_path / "one" / "students" / c.name / "model.safetensors")
        b = load_file(tmp_path / "two" / "students" / c.name / "model.safetensors")
        _assert_same_weights(a, b)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_train_teacher_resumes_exactly(tmp_path, family):
    """A teacher that ends below its target saves nothing but its checkpoints (one after every
    validation); rerun with a larger budget and --resume it continues to the weights of one
    longer run, W&B run included."""
    from kdmech.teacher import TeacherTraining, train_teacher
    from kdmech.errors import KdmechError
    from kdmech.models import TinySpec

    def run(out, steps, resume=False):
        training = TeacherTraining(steps=steps, n_train=64, batch_size=8, val_every=3, warmup_steps=2, target_top1=1.0)
        with _one_thread(), pytest.raises(KdmechError, match="with --resume to continue"):
            train_teacher(out / "teacher", TinySpec(1, 2, 16, 64), training, wandb="offline", progress=False,
                          family=family, resume=resume)
        return torch.load(out / "checkpoints" / "teacher" / "last.ckpt", weights_only=True)

    one = run(tmp_path / "one", 15)
    run(tmp_path / "two", 7)  # its last checkpoint: step 6
    two = run(tmp_path / "two", 15, resume=True)
    assert one["global_step"] == two["global_step"] == 15
    _assert_same_weights(one["state_dict"], two["state_dict"])

    def history(out):
        run_id = (out / "checkpoints" / "teacher" / "wandb_run_id").read_text().strip()
        (folder,) = offline_folders(out, run_id)
        return sorted((r[STEP_KEY], k, json.dumps(v)) for r in offline_history(folder) for k, v in r.items())

    assert history(tmp_path / "one") == history(tmp_path / "two")


def test_a_stopped_teacher_stays_stopped_when_resumed(tmp_path):
    """Lightning forgets `should_stop` across a resume; StopAtTarget remembers it stopped."""
    import lightning as L

    from kdmech.distill.trainer import ResumableCheckpoint
    from kdmech.teacher import StopAtTarget

    class Climbing(L.LightningModule):  # val/top1 = 0.1 × step: reaches 0.5 at step 5
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, i):
            return (self.w * batch).sum()

        def validation_step(self, batch, i):
            self.log("val/top1", 0.1 * self.global_step)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(64, 1), batch_size=4)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=4)

    def fit(resume):
        stop = StopAtTarget("val/top1", mode="max", stopping_threshold=0.45, patience=100, check_on_train_epoch_end=False)
        trainer = L.Trainer(max_steps=12, val_check_interval=1, check_val_every_n_epoch=None, logger=False,
                            callbacks=[stop, ResumableCheckpoint(tmp_path)], enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(Climbing(), ckpt_path=str(tmp_path / "last.ckpt") if resume else None)
        return trainer.global_step

    assert fit(False) == 5
    assert fit(True) == 5  # EarlyStopping alone would train on to 12


def test_batches_are_a_function_of_seed_and_step(tokenizer, tmp_path):
    """Fresh runs see the batches torch's shuffling DataLoader gave them before; a run resumed
    at any checkpoint (mid-epoch or at an epoch's end) sees the rest of that sequence."""
    import lightning as L
    from torch.utils.data import DataLoader

    from kdmech.distill.trainer import ResumableCheckpoint
    from kdmech.distill import CorpusDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def training_step(self, batch, i):
            self.seen.append(batch["input_ids"].tolist())
            return self.w.sum() * 0

        def validation_step(self, batch, i):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    class OldCorpus(CorpusDataModule):  # the loader before resuming was exact
        def train_dataloader(self):
            return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(self.seed))

    def fit(data, steps, resume=False):
        module = Recorder()
        trainer = L.Trainer(max_steps=steps, logger=False, callbacks=[ResumableCheckpoint(tmp_path)],
                            val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=1,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, data, ckpt_path=str(tmp_path / "last.ckpt") if resume else None)
        return module.seen

    for n in (40, 36):  # 5 batches an epoch, the last full or partial
        whole = fit(CorpusDataModule(tokenizer, n, 8, 8, seed=3), 18)
        assert whole == fit(OldCorpus(tokenizer, n, 8, 8, seed=3), 18)
        for k in (3, 15):  # mid-epoch, and at the end of the third epoch
            fit(CorpusDataModule(tokenizer, n, 8, 8, seed=3), k)
            assert fit(CorpusDataModule(tokenizer, n, 8, 8, seed=3), 18, resume=True) == whole[k:]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(teachers, uninterrupted, tmp_path, capsys):
    import shutil

    from kdmech.cli import main
    from kdmech.distill.trainer import resume_point
    from kdmech.errors import KdmechError

    ckpt = tmp_path / "run" / "checkpoints" / NAME
    shutil.copytree(uninterrupted("gpt2") / "checkpoints" / NAME, ckpt)
    data = (ckpt / "last.ckpt").read_bytes()
    (ckpt / "last.ckpt").write_bytes(data[: len(data) // 2])  # a copy cut short
    point = resume_point(ckpt)
    assert point.path.name == "previous.ckpt" and point.step == STEPS - EVERY
    assert "was damaged" in capsys.readouterr().out and not (ckpt / "last.ckpt").exists()
    flipped = bytearray((ckpt / "previous.ckpt").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one bit flipped: loads, but fails its checksum
    (ckpt / "previous.ckpt").write_bytes(bytes(flipped))
    with pytest.raises(KdmechError, match="no checkpoint in .* reads back whole"):
        resume_point(ckpt)
    args = _cli(teachers["gpt2"], tmp_path / "run", "--resume")[3:]
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "reads back whole" in lines[0], lines


def test_resume_before_any_checkpoint_keeps_one_wandb_run(teachers, tmp_path):
    """--resume of a run that never reached a checkpoint starts over, in the same W&B run: the
    earlier offline folder of that id is moved aside, not left to be synced as a second run."""
    from dataclasses import replace

    out = tmp_path / "run"
    short = dict(training=replace(TRAINING, steps=3), analysis=replace(ANALYSIS, circuits=False))
    _distill(teachers["gpt2"], out, **short)  # 3 steps: no validation, so no checkpoint
    assert not (out / "checkpoints" / NAME / "last.ckpt").exists()
    _distill(teachers["gpt2"], out, resume=True, **short)
    run_id = (out / "checkpoints" / NAME / "wandb_run_id").read_text().strip()
    (folder,) = offline_folders(out, run_id)
    assert sorted((out / "wandb").glob("offline-run-*")) == [folder]
    assert len(list((out / "wandb" / "superseded").glob(f"offline-run-*-{run_id}"))) == 1
    steps = sorted(row[STEP_KEY] for row in offline_history(folder) if "analysis/A" in row)
    assert steps == [0, 3]


def test_killed_after_the_last_checkpoint_finishes_the_analyses(uninterrupted, teachers, tmp_path):
    """Killed after its last checkpoint (during the final circuits, the timeline or the saving
    of the student), the run resumes at its last step: Lightning trains nothing, and the run
    still finishes the analyses, the timeline and the student as an uninterrupted one does."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted("gpt2"), out)
    # what a kill during the last step's end-of-training work leaves behind
    shutil.rmtree(out / "students")
    shutil.rmtree(out / "timeline")
    (out / "analysis" / NAME / f"circuit_step_{STEPS}.json").unlink()
    assert _distill(teachers["gpt2"], out, resume=True).steps == [STEPS]
    _assert_same_weights(_weights(uninterrupted("gpt2")), _weights(out))
    assert _analysis_files(uninterrupted("gpt2")) == _analysis_files(out)
    assert (out / "timeline" / NAME / "events.json").exists()
    assert _wandb_rows(out) == _wandb_rows(uninterrupted("gpt2"))


def test_background_analyses_equal_the_foreground_ones(teachers, uninterrupted, tmp_path):
    """analysis.background: each checkpoint analysed on a copy of the student in a thread while
    training goes on gives the same weights and the same records, byte for byte."""
    out = tmp_path / "background"
    result = _distill(teachers["gpt2"], out, wandb="disabled", analysis=replace(ANALYSIS, background=True))
    assert result.steps == [0, 4, 8, 12, 16]
    _assert_same_weights(_weights(uninterrupted("gpt2")), _weights(out))
    assert _analysis_files(uninterrupted("gpt2")) == _analysis_files(out)


def test_a_frozen_teacher_is_profiled_once_per_process(teachers, uninterrupted, tmp_path, monkeypatch):
    """Runs in one process on the same teacher weights, prompts and options (the quickstart's
    students, a sweep's points) share the teacher's profile, circuit and probes: built once,
    and the records equal those of a run that built its own."""
    from kdmech.analysis import checkpoint

    reference = _analysis_files(uninterrupted("gpt2"))
    monkeypatch.setenv("KDMECH_CACHE", "off")  # in-process sharing only (the disk cache: test_teacher_cache)
    built = []
    original = checkpoint.TeacherSide.build.__func__
    monkeypatch.setattr(checkpoint.TeacherSide, "build",
                        classmethod(lambda cls, *a, **k: built.append(1) or original(cls, *a, **k)))
    checkpoint.forget_shared_teacher_sides()
    for run in ("first", "second"):
        _distill(teachers["gpt2"], tmp_path / run, wandb="disabled")
        assert _analysis_files(tmp_path / run) == reference
    assert built == [1]
    _distill(teachers["gpt2"], tmp_path / "other-options", wandb="disabled",
             analysis=replace(ANALYSIS, ablation="zero"))
    assert built == [1, 1]  # other options: a teacher side of their own


def test_a_later_run_reads_the_teacher_side_from_disk(teachers, uninterrupted, tmp_path, monkeypatch):
    """A run in a new process (no in-process sharing) on a teacher an earlier run analysed
    reads the teacher's side from the disk cache: built once, the same records."""
    from kdmech.analysis import checkpoint

    reference = _analysis_files(uninterrupted("gpt2"))
    monkeypatch.setenv("KDMECH_CACHE", str(tmp_path / "cache"))
    built = []
    original = checkpoint.TeacherSide.build.__func__
    monkeypatch.setattr(checkpoint.TeacherSide, "build",
                        classmethod(lambda cls, *a, **k: built.append(1) or original(cls, *a, **k)))
    for run in ("first", "second"):
        checkpoint.forget_shared_teacher_sides()  # as a new process would start
        _distill(teachers["gpt2"], tmp_path / run, wandb="disabled")
        assert _analysis_files(tmp_path / run) == reference
    assert built == [1]
    assert len(list((tmp_path / "cache" / "teacher-sides").glob("*.pt"))) == 1
