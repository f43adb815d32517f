"""`whisper-tune audit`: labels that disagree with their audio (whisper_tune.train.inference.audit.run_audit,
imported when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, Flag, WorkOpt, with_config

FLAGS = (
    MODEL,
    Flag("model.language", "Language for multilingual models, e.g. arabic, french (must match features)."),
    Flag("model.task", "transcribe or translate (must match features)."),
)


@with_config(*FLAGS)
def audit(
    work: WorkOpt = Path("work"),
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 16,
    worst: Annotated[int, typer.Option(help="How many of the worst flagged rows to show.")] = 10,
    *,
    cfg: Config,
) -> None:
    """Decode every cached train and validation clip and flag labels that disagree with their audio (WORK/audit.parquet)."""
    from whisper_tune.train.inference.audit import run_audit

    run_audit(work_dir=work, model=cfg.model.name, cfg=cfg, batch_size=batch_size, worst=worst)
