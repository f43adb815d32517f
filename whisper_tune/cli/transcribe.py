"""`whisper-tune transcribe`: audio files -> text (whisper_tune.train.inference.transcribe.run_transcribe, imported when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, Flag, with_config

# How evaluate and transcribe decode (config [decode], plus the model's language and task).
DECODE_FLAGS = (
    MODEL,
    Flag("model.language", "Language of the audio for multilingual models, e.g. french."),
    Flag("model.task", "transcribe, or translate (to English; multilingual models)."),
    Flag("decode.backend", "auto (CTranslate2 when installed and the model converts), transformers or ctranslate2."),
    Flag("decode.beam_size", "Beams at temperature 0 (1 = greedy; published WERs use 5)."),
    Flag("decode.guards", "Whisper's hallucination guards (temperature fallback, compression-ratio, log-probability "
                          "and no-speech rules)."),
    Flag("decode.temperature", "Fallback temperatures, comma-separated, tried while a guard rejects the text."),
    Flag("decode.compression_ratio_threshold", "Retry text whose gzip compression ratio is above this (0 = off)."),
    Flag("decode.logprob_threshold", "Retry text whose mean token log-probability is below this."),
    Flag("decode.no_speech_threshold", "No text where the no-speech probability is above this and the "
                                       "log-probability is low (1 = off)."),
    Flag("decode.prompt", "Initial prompt (vocabulary, spelling) given before the first window."),
)

FLAGS = DECODE_FLAGS + (
    Flag("decode.condition_on_previous_text", "Long-form: each window sees the text of the window before."),
    Flag("decode.word_timestamps", "Word times: a \"words\" list in JSONL rows, one subtitle cue per word."),
    Flag("decode.vad", "Skip non-speech with faster-whisper's bundled Silero VAD (long recordings)."),
)


@with_config(*FLAGS)
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files or folders.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results here (.csv, .jsonl, or subtitles: .srt, .vtt); default: print. A re-run skips inputs already in it.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 8,
    *,
    cfg: Config,
) -> None:
    """Transcribe audio files (clips over 30 s use long-form decoding; results are written as they finish)."""
    from whisper_tune.train.inference.transcribe import run_transcribe

    run_transcribe(model=cfg.model.name, inputs=audio, cfg=cfg, output=output, batch_size=batch_size)
