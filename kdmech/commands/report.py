"""`kdmech report DIR`: the capacity-comparison report of a quickstart or sweep folder."""

from __future__ import annotations

from pathlib import Path

from kdmech.report.html import write_report
from kdmech.validation import check_run_folder


def report(folder: Path) -> Path:
    """Write DIR/report/report.html (self-contained, images embedded) and its PNGs.

    Args:
        folder: A folder written by `kdmech quickstart` or `kdmech sweep`.
    """
    check_run_folder(folder)
    path = write_report(folder)
    print(f"report written to {path} (open it in a browser; it needs no network)")
    return path
