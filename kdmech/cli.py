"""The `kdmech` command line: jsonargparse turns the command functions (their type hints and
docstrings) into subcommands, each with `--config FILE.yaml`. Bad input ends in one line on
stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import sys

from kdmech.cli_aliases import data_path, lightning_names
from kdmech.errors import KdmechError


def _commands() -> dict:
    from kdmech.commands.analyze import analyze
    from kdmech.commands.distill import distill
    from kdmech.commands.distill_shared import distill_shared
    from kdmech.commands.quickstart import quickstart
    from kdmech.commands.report import report
    from kdmech.commands.sweep import sweep
    from kdmech.commands.timeline import timeline
    from kdmech.commands.train_teacher import train_teacher
    from kdmech.commands.workspace import workspace

    return {"train-teacher": train_teacher, "distill": distill,
            "distill-shared": distill_shared, "quickstart": quickstart,
            "analyze": analyze, "report": report, "sweep": sweep, "timeline": timeline,
            "workspace": workspace}


def _one_line(message: str) -> str:
    lines = [l.strip() for l in str(message).strip().splitlines() if l.strip()]
    return " ".join(lines)


FLAGS = ("--resume", "--fresh")


def _bare_flags(argv: list[str]) -> list[str]:
    """Let `--resume`/`--fresh` stand alone, as users type them (jsonargparse wants a value)."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in FLAGS and (nxt is None or nxt.startswith("-")):
            out.append("true")
    return out


POSITIONAL = {"report": "--folder", "timeline": "--folder", "sweep": "--config_file", "workspace": "--project"}


def _positional(argv: list[str]) -> list[str]:
    """`kdmech report DIR` reads better than `--folder DIR`; other options stay named."""
    if len(argv) >= 2 and argv[0] in POSITIONAL and not argv[1].startswith("-"):
        return [argv[0], POSITIONAL[argv[0]], *argv[1:]]
    return argv


def _quiet_weight_loading() -> None:
    """No "Loading weights"/"Writing model shards" bars (transformers' own tqdm): they would
    stand before a one-line error. Hub downloads keep their progress bars."""
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    enable_progress_bars()


INTERRUPTED = "kdmech: interrupted; rerun with --resume to continue"
CONTINUES = {"sweep": "kdmech: interrupted; run the same command again to continue (finished points are skipped, "
                      "the interrupted one resumes from its checkpoint)",
             "quickstart": "kdmech: interrupted; run the same command again to start its students anew (a trained "
                           "teacher is reused)"}
RESUMABLE = ("distill", "distill-shared", "train-teacher")


def interrupted_line(argv: list[str]) -> str:
    """What Ctrl-C prints: the command that continues the interrupted one."""
    command = argv[0] if argv else ""
    if command in RESUMABLE:
        return INTERRUPTED
    return CONTINUES.get(command, "kdmech: interrupted")


class _Interrupts:
    """Remembers a Ctrl-C: Lightning catches the KeyboardInterrupt itself, shuts the run down
    and calls sys.exit(1), so `main` needs to know the exit came from the user."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    interrupts = _Interrupts()
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, interrupts)
    try:
        return _main(argv, interrupts)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None, interrupts: _Interrupts) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    _quiet_weight_loading()
    from jsonargparse import ArgumentError, auto_cli

    argv = _positional(_bare_flags(sys.argv[1:] if argv is None else list(argv)))
    try:
        argv = data_path(lightning_names(argv))
    except KdmechError as e:
        print(f"kdmech: error: {e}", file=sys.stderr)
        return 2
    if argv[:1] in (["--version"], ["-V"]):
        import kdmech

        print(f"kdmech {kdmech.__version__}")
        return 0
    try:
        auto_cli(_commands(), args=argv, exit_on_error=False, as_positional=False)
    except ArgumentError as e:
        print(f"kdmech: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KdmechError as e:
        print(f"kdmech: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"kdmech: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_line(argv), file=sys.stderr)
        return 130
    except SystemExit:
        if not interrupts.seen:  # jsonargparse's --help and the like
            raise
        print(interrupted_line(argv), file=sys.stderr)
        return 130
    except OSError as e:  # unwritable, full disk, a file where a folder should be, mid-run
        where = f" {e.filename!r}" if e.filename else ""
        print(f"kdmech: error: cannot write or read{where}: {_one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        print(f"kdmech: error: a model's weights file is damaged ({_one_line(e)}); copy it again "
              f"or save the model anew", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
