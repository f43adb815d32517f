"""`whisper-tune export`: a model -> a CTranslate2 / faster-whisper folder (whisper_tune.train.inference.export.run_export, imported when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, with_config


@with_config(MODEL)
def export(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    to: Annotated[str, typer.Option(help="Target format: ct2 (CTranslate2 / faster-whisper).")] = "ct2",
    quantization: Annotated[str, typer.Option(help="int8, int8_float16, float16 or float32.")] = "int8",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Transcribe a few clips with faster-whisper after writing.")] = True,
    *,
    cfg: Config,
) -> None:
    """Export a fine-tuned model to a folder that faster-whisper loads directly."""
    from whisper_tune.train.inference.export import run_export

    run_export(model=cfg.model.name, out_dir=out, to=to, quantization=quantization, verify=verify)
