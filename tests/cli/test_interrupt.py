"""An interrupted command (Ctrl-C or SIGTERM, as Slurm and Kubernetes send before killing) ends in one line that
says truly what is kept and how to go on, for that command; SIGTERM exits 143, Ctrl-C 130."""

from __future__ import annotations

import os
import signal
import time

import pytest
from typer.testing import CliRunner

from whisper_tune.cli import INTERRUPTED, app

# each command, the stage function it calls, and arguments that reach that call
COMMANDS = {
    "validate": ("whisper_tune.pipeline.validate.stage.run_validate", ["--csv", "x.csv"]),
    "features": ("whisper_tune.pipeline.featurize.stage.run_features", ["--model", "bundled:tiny.en"]),
    "audit": ("whisper_tune.train.inference.audit.run_audit", ["--model", "bundled:tiny.en"]),
    "train": ("whisper_tune.train.trainer.run_train", ["--model", "bundled:tiny.en"]),
    "evaluate": ("whisper_tune.train.inference.evaluate.run_evaluate", ["--model", "bundled:tiny.en"]),
    "transcribe": ("whisper_tune.train.inference.transcribe.run_transcribe", ["--model", "bundled:tiny.en", "a.wav"]),
    "export": ("whisper_tune.train.inference.export.run_export", ["--model", "bundled:tiny.en", "out"]),
    "import-model": ("whisper_tune.pipeline.models.resolve_model", ["bundled:tiny.en"]),
}


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def terminate(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)                       # the handler raises at once
    raise AssertionError("SIGTERM was not delivered")


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("how, code, prefix", [(interrupt, 130, "interrupted"),
                                               (terminate, 143, "interrupted (SIGTERM)")])
def test_every_command_says_what_an_interruption_keeps(command, how, code, prefix, monkeypatch, tmp_path):
    target, args = COMMANDS[command]
    monkeypatch.setattr(target, how)
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(app, [command, *args])
    assert res.exit_code == code, res.output
    assert res.stderr.strip().splitlines()[-1] == f"error: {prefix}; {INTERRUPTED[command]}"
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_hints_are_true_for_each_command():
    assert "--resume" in INTERRUPTED["train"]
    for command in ("evaluate", "export", "validate", "import-model"):     # they keep nothing to go on from
        assert "resume" not in INTERRUPTED[command] and INTERRUPTED[command].startswith("nothing was written")
    assert "skips them" in INTERRUPTED["transcribe"]
    assert "finished shards are kept" in INTERRUPTED["features"]
