"""`whisper-tune import-model`: a CTranslate2 folder -> a transformers checkpoint (whisper_tune.pipeline.models.resolve_model)."""

from __future__ import annotations

from typing import Annotated

import typer


def import_model(
    model: Annotated[str, typer.Argument(help="CTranslate2 / faster-whisper folder, or bundled:tiny.en.")],
) -> None:
    """Import a CTranslate2 Whisper folder into a transformers checkpoint (cached by content hash) and print its path."""
    from whisper_tune.pipeline.models import resolve_model

    typer.echo(resolve_model(model))
