"""`whisper-tune evaluate`: WER/CER on the cached clean clips (whisper_tune.train.inference.evaluate.run_evaluate, imported when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import WorkOpt, with_config
from whisper_tune.cli.transcribe import DECODE_FLAGS


@with_config(*DECODE_FLAGS)
def evaluate(
    work: WorkOpt = Path("work"),
    baseline: Annotated[Optional[str], typer.Option(help="A second model to compare against (same forms as --model).")] = None,
    split: Annotated[str, typer.Option(help="Manifest split to score: test, validation or train.")] = "test",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the numbers as JSON here.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a Markdown report here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 16,
    worst: Annotated[int, typer.Option(help="How many worst clips to list.")] = 10,
    *,
    cfg: Config,
) -> None:
    """WER and CER of a model (and optionally a baseline) on the cached clean clips."""
    from whisper_tune.train.inference.evaluate import EvalSettings, run_evaluate

    run_evaluate(EvalSettings(model=cfg.model.name, work_dir=work, cfg=cfg, baseline=baseline, split=split,
                              json_path=json_path, report_path=report, batch_size=batch_size, worst=worst))
