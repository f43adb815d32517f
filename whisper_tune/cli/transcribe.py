"""`whisper-tune transcribe`: audio files -> text (pipeline.transcribe.run_transcribe, imported when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, with_config


@with_config(MODEL)
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files or folders.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results here (.csv, .jsonl, or subtitles: .srt, .vtt); default: print.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 8,
    *,
    cfg: Config,
) -> None:
    """Transcribe audio files (clips over 30 s use long-form decoding)."""
    from whisper_tune.train.inference.transcribe import run_transcribe

    run_transcribe(model=cfg.model.name, inputs=audio, cfg=cfg, output=output, batch_size=batch_size)
