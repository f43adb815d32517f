"""The `whisper-tune` console script: the typer app, one thin module per command.

    validate.py  features.py  audit.py  train.py  evaluate.py  transcribe.py  export.py  import_model.py   one each
    flags.py     config flags derived from pipeline/config.py's dataclasses (`Flag`, `with_config`)

Each command only turns flags into a Config and calls its stage's plain function. The stage is imported inside
the command, when it runs: this package imports nothing from train/ (nor audio libraries) at import time, and
dispatches lazily to train/ (`audit`, `train`, `evaluate`, `export`), so `whisper-tune train` never loads librosa and
`pipeline` never depends on `train` (the layering test allows this package alone to name it).

This module is the one place that turns a WhisperTuneError into `error: <one line>` on stderr and its exit code;
no traceback for bad input. Library code raises; it never prints errors or exits. An interruption ends every
command the same way: Ctrl-C (SIGINT) exits 130, SIGTERM (what Slurm and Kubernetes send before killing) is raised
as `Terminated`, a KeyboardInterrupt, so the same clean-up runs (temporaries removed), and exits 143; both print
`interrupted; <what is kept and how to go on>`, the command's line of INTERRUPTED.

To add a flag for a new config field: add one line to the command's FLAGS table, e.g. in train.py
`Flag("training.pack", "Pack several clips into one 30 s window.")`. Its name (--pack), type, `--x/--no-x` form
for booleans and the default shown in --help come from the dataclass field (see flags.py).
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from typer import rich_utils

from whisper_tune.pipeline.core.errors import WhisperTuneError, worker_message
from whisper_tune.pipeline.core.log import setup_logging
from whisper_tune.cli import audit, evaluate, export, features, import_model, train, transcribe, validate

HELP_WIDTH = 120                       # --help when not on a terminal (a pipe, a log): no cut option names
if rich_utils.MAX_WIDTH is None and not sys.stdout.isatty():
    rich_utils.MAX_WIDTH = HELP_WIDTH

app = typer.Typer(
    name="whisper-tune",
    help="Fine-tune Whisper on your own recordings: validate -> features -> train -> evaluate / transcribe / export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug messages too.")] = False,
) -> None:
    """Fine-tune Whisper on your own recordings: validate -> features -> train -> evaluate / transcribe / export."""
    if quiet and verbose:
        fail("--quiet and --verbose contradict each other; pass one of them", 2)
    setup_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# What an interrupted command leaves, and how to go on: true for each command (tests/cli/test_interrupt.py).
INTERRUPTED: dict[str, str] = {
    "validate": "nothing was written (an earlier manifest is kept as it was); re-run the same command",
    "features": "finished shards are kept; re-run the same command to resume, only the missing clips are computed",
    "audit": "nothing was written (an earlier WORK/audit.parquet is kept as it was); re-run the same command to "
             "audit again from the start",
    "train": "the complete checkpoint-* folders in --output-dir are kept; re-run the same command with --resume "
             "to continue from the newest (before the first checkpoint, re-run it without --resume)",
    "evaluate": "nothing was written and nothing is kept; re-run the same command to evaluate again from the start",
    "transcribe": "the outputs already finished are kept; a re-run of the same command skips them and "
                  "transcribes the rest",
    "export": "nothing was written (the temporary folder was removed, OUT is as it was); re-run the same command "
              "to export again from the start",
    "import-model": "nothing was written (the temporary folder was removed); re-run the same command",
}
SIGINT_EXIT, SIGTERM_EXIT = 130, 143           # 128 + the signal's number, as shells report them


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)      # a second SIGTERM must not cut the clean-up short
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises Terminated (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_errors(fn: Callable[..., Any], command: str = "") -> Callable[..., Any]:
    """Turn WhisperTuneError (and Ctrl-C or SIGTERM) into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except WhisperTuneError as err:
            fail(" ".join(worker_message(str(err)).split()), err.exit_code)
        except KeyboardInterrupt as err:
            how = " (SIGTERM)" if isinstance(err, Terminated) else ""
            hint = INTERRUPTED.get(command, "re-run the same command")
            fail(f"interrupted{how}; {hint}", SIGTERM_EXIT if isinstance(err, Terminated) else SIGINT_EXIT)
        except Exception as err:
            from whisper_tune.pipeline.core.fileio import disk_full, is_disk_full

            if not is_disk_full(err):
                raise
            where = Path(getattr(err, "filename", None) or "nothing").parent   # the file's folder when known
            fail(str(disk_full(err, where if str(where) != "." else Path.cwd())))

    return wrapper


COMMANDS: dict[str, Callable[..., Any]] = {
    "validate": validate.validate, "features": features.features, "audit": audit.audit, "train": train.train,
    "evaluate": evaluate.evaluate, "transcribe": transcribe.transcribe, "export": export.export,
    "import-model": import_model.import_model,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(user_errors(_command, _name))


def main() -> int:  # pragma: no cover - console entry
    app(prog_name="whisper-tune")
    return 0
