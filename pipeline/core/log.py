"""The one logging setup: every stage's messages and progress go to stderr through the "whisper_tune" logger;
results (tables, summaries, paths written) are printed to stdout by the stages.

    log = logging.getLogger(__name__)      # in any module of the package: whisper_tune.<...>
    log.info("resuming from checkpoint-2")

The handler is installed once, when this module is first imported (the package's modules import it), at INFO, so
library use (scripts, notebooks, tests) shows the same lines as the CLI; `whisper-tune --quiet` / `--verbose`
set the level through setup_logging. The handler writes to whatever sys.stderr is when a line is emitted, so a
caller that redirects stderr (a test's capture, a CLI runner) gets the lines.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "whisper_tune"


class _CurrentStderr(logging.StreamHandler):
    """A StreamHandler on sys.stderr as it is at each emit, not as it was when the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it
        pass


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Plain lines on stderr at `level` for the whisper_tune logger; safe to call again (one handler)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


setup_logging()
