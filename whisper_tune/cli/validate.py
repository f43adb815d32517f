"""`whisper-tune validate`: CSV or `datasets` folder -> WORK/manifest.parquet
(whisper_tune.pipeline.validate.stage.run_validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from whisper_tune.pipeline.core.errors import CsvError
from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, Flag, WorkOpt, with_config

FLAGS = (
    MODEL,
    Flag("data.audio_column", "Audio column (default: audios, audio, path or file)."),
    Flag("data.text_column", "Text column (default: transcription, text or sentence)."),
    Flag("data.allow_outside", "Accept paths outside the CSV's folder."),
    Flag("data.test_share", "Share of clips in the test split."),
    Flag("data.validation_share", "Share of clips in the validation split (used to pick the best checkpoint; "
                                  "0: the test split is used)."),
    Flag("data.seed", "Split seed."),
    Flag("data.min_seconds", "Shortest clip kept, seconds."),
    Flag("data.max_seconds", "Longest clip kept, seconds."),
    Flag("data.min_text_chars", "Transcripts must be longer than this."),
    Flag("data.group_column", "CSV column of speaker/session ids: all rows of a group go to the same split."),
    Flag("data.subtitles_column", "Subtitles column of a CSV of recordings (default: subtitles, srt, vtt or captions)."),
    Flag("data.window_seconds", "Longest window cut from a recording along its subtitle cues or segments, seconds."),
    Flag("data.dataset_split", "Split of a --dataset with several (default: its only split, else train)."),
)


@with_config(*FLAGS)
def validate(
    csv: Annotated[Optional[Path], typer.Option("--csv", help="CSV of clips (audio, transcript), of recordings "
                   "(audio, subtitles: SRT/VTT) or of segments (audio, start, end, transcript).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="A `datasets` folder (save_to_disk), "
                       ".arrow/.parquet files, or a hub id, instead of --csv.")] = None,
    work: WorkOpt = Path("work"),
    model: Optional[str] = None,  # the --model flag (MODEL): its raw value says whether it was given
    *,
    cfg: Config,
) -> None:
    """Check every CSV row and write WORK/manifest.parquet with a status and reason per row."""
    from whisper_tune.pipeline.validate.stage import run_validate

    result = run_validate(csv_path=csv, dataset=dataset, work_dir=work, cfg=cfg, use_model=model is not None)
    if result.kept == 0:
        raise CsvError(f"no usable clip in {csv or dataset}: every row was rejected "
                       f"(see the reasons above and {work / 'manifest.parquet'})")
