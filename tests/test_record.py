"""The run record: a checkpoint analysis written and read back through `CheckpointRecord`, in
the places `RunLayout` names; the history grown one checkpoint at a time equals the history
rebuilt from every record."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from kdmech.analysis.checkpoint import TeacherSide, analyze_checkpoint
from kdmech.analysis.options import AnalysisSchedule
from kdmech.analysis.record import CheckpointRecord, last_circuits
from kdmech.analysis.restructuring import append_history, write_history
from kdmech.run_layout import RunLayout, step_of


@pytest.fixture(scope="module")
def records(tiny_gpt2, tokenizer, prompts):
    """Three checkpoints of a 'student' (the teacher with growing weight noise); circuits at
    the last one."""
    options = AnalysisSchedule(filter_prompts=False, allow_weak_teacher=True)
    side = TeacherSide.build(tiny_gpt2, tokenizer, prompts, options, {"weak": True})
    out = []
    for step, sigma in ((0, 0.0), (10, 0.05), (20, 0.2)):
        student = copy.deepcopy(tiny_gpt2)
        gen = torch.Generator().manual_seed(step)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(sigma * p.std() * torch.randn(p.shape, generator=gen))
        result = analyze_checkpoint(side, student, tokenizer, prompts, step, circuits=step == 20)
        out.append(result.record)
    return out


def test_layout_names_every_file(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.step_json("s", 40) == tmp_path / "analysis" / "s" / "step_40.json"
    assert layout.circuit_json("s", 40).name == "circuit_step_40.json"
    assert step_of(layout.circuit_json("s", 40)) == 40 and step_of(layout.step_json("s", 7)) == 7
    assert layout.student("s") == tmp_path / "students" / "s"
    assert layout.pair_analysis("s") == tmp_path / "pair-analysis" / "s"
    assert layout.analysed_students() == []


def test_records_round_trip(records, tmp_path):
    layout = RunLayout(tmp_path)
    for r in records:
        r.save(layout, "st")
    assert layout.analysed_students() == ["st"]
    assert layout.steps("st") == [0, 10, 20] and layout.circuit_steps("st") == [20]
    back = CheckpointRecord.load_all(layout, "st")
    assert [b.pair.to_json() for b in back] == [json.loads(json.dumps(r.pair.to_json())) for r in records]
    assert back[0].circuits is None and back[-1].circuits is not None
    assert back[-1].circuits.to_json() == json.loads(json.dumps(records[-1].circuits.to_json()))
    assert last_circuits(back).step == 20
    assert all(b.pair.teacher_weak for b in back)  # the competence record travels with every step


def test_the_same_student_scores_one_everywhere(records):
    first = records[0].pair  # sigma 0: the student is the teacher
    assert first.alignment.A == pytest.approx(1.0, abs=1e-6)
    assert all(m.similarity == pytest.approx(1.0, abs=1e-5) for m in first.matching)


def test_appended_history_equals_the_rebuilt_one(records, tmp_path):
    layout = RunLayout(tmp_path)
    for r in records:
        r.save(layout, "st")
        append_history(layout, "st", r)
    grown = (layout.history_csv("st").read_text(), layout.steps_csv("st").read_text())
    write_history(layout, "st")
    rebuilt = (layout.history_csv("st").read_text(), layout.steps_csv("st").read_text())
    assert grown == rebuilt
    lines = grown[0].splitlines()
    n_nodes = len(records[0].pair.influence["student"])
    assert len(lines) == 1 + 3 * n_nodes  # a header, then a row per step and node


def test_an_empty_circuit_says_what_it_is(records):
    from kdmech.analysis.circuit import Circuit

    c = Circuit(threshold=0.2, nodes=[], completeness=119.0)
    assert c.empty and c.summary.startswith("no circuit: 119% of LD survives ablating every node")
    d = c.to_json()
    assert d["empty"] is True and "no circuit" in d["summary"]
    assert Circuit.from_json(d) == c
    full = replace(c, nodes=["L0.MLP"], edges=[["L0.MLP", "resid_final"]], edges_pruned=True)
    assert full.summary.startswith("1 nodes ['L0.MLP'], 1 edges")


def test_atomic_dir_swaps_without_losing_the_old_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from kdmech.run_layout import atomic_dir

    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    # a crash right after the old folder was renamed aside: the next run brings it back first
    real_rename = Path.rename
    calls = []

    def crash_on_second(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("killed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_second)
    with pytest.raises(OSError):
        with atomic_dir(final) as tmp:
            (tmp / "a").write_text("2")
    monkeypatch.undo()
    assert not final.exists() and (tmp_path / "out.old" / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final):
            raise RuntimeError("a failed write")
    assert (final / "a").read_text() == "1"  # restored, and the failed write left nothing
    assert not (tmp_path / "out.tmp").exists()
