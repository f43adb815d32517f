"""The console script as a whole: one logging setup (--quiet / --verbose), --help readable when piped."""

from __future__ import annotations

import logging
import subprocess
import sys

from typer.testing import CliRunner

from whisper_tune.cli import app
from whisper_tune.pipeline.core.log import setup_logging


def test_help_is_not_cut_when_not_on_a_terminal(tmp_path):
    out = subprocess.run([sys.executable, "-m", "whisper_tune.cli", "train", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120).stdout
    assert "--gradient-checkpointing " in out and "…" not in out.split("Options")[1].split("\n")[1]
    assert "--no-gradient-checkpointing" in out


def test_quiet_and_verbose_set_the_one_logger(tmp_path):
    logger = logging.getLogger("whisper_tune")
    runner = CliRunner()
    runner.invoke(app, ["--quiet", "import-model", "--help"])
    assert logger.level == logging.WARNING
    runner.invoke(app, ["--verbose", "import-model", "--help"])
    assert logger.level == logging.DEBUG
    res = runner.invoke(app, ["--quiet", "--verbose", "import-model", "--help"])
    assert res.exit_code == 2 and "contradict" in res.output
    setup_logging()
    from whisper_tune.pipeline.core.log import _CurrentStderr

    assert logger.level == logging.INFO and sum(isinstance(h, _CurrentStderr) for h in logger.handlers) == 1


def test_messages_go_to_stderr_results_to_stdout(tmp_path):
    code = ("import logging, sys; from whisper_tune.pipeline.core.log import setup_logging; setup_logging(); "
            "logging.getLogger('whisper_tune.x').info('a message'); print('a result')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "a result\n" and proc.stderr == "a message\n"
