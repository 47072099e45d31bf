"""The capacity report: built from a real distillation folder, then rendered in headless
Chromium (Debian's package; `make test` installs it) to check every section and image."""

import re
import shutil
import subprocess

import pytest

from kdmech.cli import main
from kdmech.commands.analyze import AnalyzeOptions, analyze
from kdmech.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = ["Summary", "Initialisation", "Alignment over training", "Capacity ratio", "Influence: teacher beside each student",
            "Circuits side by side", "Matching", "Noise validation", "Distribution shift", "Restructuring"]


@pytest.fixture(scope="module")
def report(trained_teacher, tmp_path_factory):
    from kdmech.commands.distill import AnalysisSchedule, DistillTraining, distill
    from kdmech.models import CapacitySpec

    teacher, _ = trained_teacher
    out = tmp_path_factory.mktemp("report_run")
    for depth in (0.25, 0.5):
        r = distill(str(teacher), out, CapacitySpec(depth=depth), training=DistillTraining(steps=20),
                    analysis=AnalysisSchedule(every_n_steps=10, per_type=16, min_prompts=16), wandb="disabled", progress=False)
        analyze(str(teacher), str(out / "students" / r.name), out / "pair-analysis" / r.name,
                analyses=["noise", "shift", "sensitivity"],
                analysis=AnalyzeOptions(per_type=16, min_prompts=16, noise_sigmas=(0.0, 1.0), noise_seeds=1, n_boot=50),
                progress=False, wandb="disabled")
    return write_report(out)


def test_report_is_self_contained(report):
    page = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "src=\"http" not in page and "<script" not in page  # nothing to fetch
    # A over steps, capacity, 2 heatmaps, 2 circuits, noise, 4 timeline views × 2 students
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 1 + 1 + 2 + 2 + 1 + 8
    for png in ("alignment_over_steps.png", "capacity.png", "noise.png"):
        assert (report.parent / png).stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
      window.onload = () => {
        const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 100).length;
        const h2 = [...document.querySelectorAll('h2')].map(h => h.textContent).join('|');
        document.title = `images=${ok}/${document.images.length};sections=${h2}`;
      };</script></body>"""))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", proc.stdout).group(1)
    images, sections = re.match(r"images=(\d+/\d+);sections=(.*)", title).groups()
    done, total = map(int, images.split("/"))
    assert total == 15 and done == total
    assert sections.split("|") == SECTIONS


def test_report_cli_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a kdmech run folder" in capsys.readouterr().err


def test_timeline_history_and_events(report, capsys):
    import json

    import pandas as pd

    from kdmech.commands.timeline import timeline

    root = report.parent.parent
    records = timeline(root)
    assert [r["student"] for r in records] == ["d0.25-w1-h1", "d0.5-w1-h1"]
    printed = capsys.readouterr().out
    assert "teacher circuit" in printed
    history = pd.read_csv(root / "analysis" / "d0.5-w1-h1" / "history.csv")
    assert list(history.columns) == ["step", "node", "influence", "in_circuit", "matched_teacher_node",
                                     "similarity", "teacher_influence"]
    assert sorted(history["step"].unique()) == [0, 10, 20]
    assert len(history) == 3 * 10  # 2 layers × (4 heads + MLP) per step
    assert history[history.step == 20]["in_circuit"].notna().all()  # circuits ran at the end
    events = json.loads((root / "timeline" / "d0.5-w1-h1" / "events.json").read_text())
    assert events["rules"]["min_similarity"] == 0.5 and events["teacher_circuit"]
    for e in events["events"]:
        assert e["kind"] in {"merge", "split", "discard", "emergence", "concentration"}
        assert e["first_step"] in (0, 10, 20)
    for png in ("influence_over_steps", "matching_flow", "alignment_parts", "events"):
        assert (root / "timeline" / "d0.5-w1-h1" / f"{png}.png").stat().st_size > 5_000
