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
SECTIONS = ["Summary", "Alignment over training", "Capacity ratio", "Influence: teacher beside each student",
            "Circuits side by side", "Matching", "Noise validation", "Distribution shift"]


@pytest.fixture(scope="module")
def report(trained_teacher, tmp_path_factory):
    from kdmech.commands.distil import AnalysisSchedule, DistillTraining, distill
    from kdmech.models import CapacitySpec

    teacher, _ = trained_teacher
    out = tmp_path_factory.mktemp("report_run")
    for depth in (0.25, 0.5):
        r = distill(str(teacher), out, CapacitySpec(depth=depth), training=DistillTraining(steps=20),
                    analysis=AnalysisSchedule(every_n_steps=10, per_type=16), wandb="disabled", progress=False)
        analyze(str(teacher), str(out / "students" / r.name), out / "pair-analysis" / r.name,
                analyses=["noise", "shift", "sensitivity"],
                options=AnalyzeOptions(per_type=16, noise_sigmas=(0.0, 1.0), noise_seeds=1, n_boot=50),
                progress=False)
    return write_report(out)


def test_report_is_self_contained(report):
    page = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "src=\"http" not in page and "<script" not in page  # nothing to fetch
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 1 + 1 + 2 + 2 + 1
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
    assert total == 7 and done == total
    assert sections.split("|") == SECTIONS


def test_report_cli_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a kdmech run folder" in capsys.readouterr().err
