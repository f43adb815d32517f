"""The `whisper-tune` console script: one thin typer command per stage.

Each command only gathers flags into config overrides and calls the stage's plain function. Stage modules are
imported inside the commands, so `whisper-tune train` never imports audio libraries. WhisperTuneError becomes a
one-line message and exit code 1; no traceback for bad input.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .errors import WhisperTuneError

app = typer.Typer(
    name="whisper-tune",
    help="Fine-tune Whisper on your own recordings: validate -> features -> train -> evaluate / transcribe / export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (see whisper-tune.example.toml).")]
WorkOpt = Annotated[Path, typer.Option("--work", help="Work folder: manifest.parquet and cache/ live here.")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", help="Hub id, local transformers folder, CTranslate2/faster-whisper folder, or bundled:tiny.en."),
]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn WhisperTuneError (and Ctrl-C) into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WhisperTuneError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; finished work is kept, re-run the same command to resume", 130)

    return wrapper


def _config(config: Optional[Path], overrides: dict[str, Any]):
    from .config import load_config

    return load_config(config, overrides)


@app.command()
@user_errors
def validate(
    csv: Annotated[Path, typer.Option("--csv", help="CSV with an audio-path column and a transcript column.")],
    work: WorkOpt = Path("work"),
    model: ModelOpt = None,
    config: ConfigOpt = None,
    audio_column: Annotated[Optional[str], typer.Option(help="Audio column (default: audios, audio, path or file).")] = None,
    text_column: Annotated[Optional[str], typer.Option(help="Text column (default: transcription, text or sentence).")] = None,
    allow_outside: Annotated[Optional[bool], typer.Option("--allow-outside/--no-allow-outside", help="Accept paths outside the CSV's folder.")] = None,
    test_share: Annotated[Optional[float], typer.Option(help="Share of clips in the test split.")] = None,
    validation_share: Annotated[Optional[float], typer.Option(help="Share of clips in the validation split (used to pick the best checkpoint; default 0: the test split is used).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Split seed.")] = None,
    min_seconds: Annotated[Optional[float], typer.Option(help="Shortest clip kept, seconds.")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(help="Longest clip kept, seconds.")] = None,
    min_text_chars: Annotated[Optional[int], typer.Option(help="Transcripts must be longer than this.")] = None,
    group_column: Annotated[Optional[str], typer.Option(help="CSV column of speaker/session ids: all rows of a group go to the same split.")] = None,
) -> None:
    """Check every CSV row and write WORK/manifest.parquet with a status and reason per row."""
    from .validate import run_validate

    cfg = _config(config, {
        "model.name": model, "data.audio_column": audio_column, "data.text_column": text_column,
        "data.allow_outside": allow_outside, "data.test_share": test_share,
        "data.validation_share": validation_share, "data.seed": seed,
        "data.min_seconds": min_seconds, "data.max_seconds": max_seconds, "data.min_text_chars": min_text_chars,
        "data.group_column": group_column,
    })
    result = run_validate(csv_path=csv, work_dir=work, cfg=cfg, use_model=model is not None)
    if result.kept == 0:
        fail(f"no usable clip in {csv}: every row was rejected (see the reasons above and {work / 'manifest.parquet'})")


@app.command()
@user_errors
def features(
    work: WorkOpt = Path("work"),
    model: ModelOpt = None,
    config: ConfigOpt = None,
    variants: Annotated[Optional[int], typer.Option(help="Feature variants per clip (variant 0 is clean).")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Worker processes (0 = all cores).")] = None,
    part: Annotated[Optional[str], typer.Option(help="Featurize only part i of N, e.g. 2/8 (1-based).")] = None,
) -> None:
    """Decode, trim, normalize, augment and log-mel every usable clip into WORK/cache/ (incremental, resumable)."""
    from .featurize import parse_part, run_features

    cfg = _config(config, {"model.name": model, "augment.variants": variants, "features.jobs": jobs})
    run_features(work_dir=work, cfg=cfg, part=parse_part(part))


@app.command()
@user_errors
def train(
    work: WorkOpt = Path("work"),
    model: ModelOpt = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the fine-tuned model and reports go.")] = Path("work/model"),
    config: ConfigOpt = None,
    epochs: Annotated[Optional[float], typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Per-device train batch size.")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option(help="Per-device eval batch size.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Gradient accumulation steps.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup: Annotated[Optional[float], typer.Option(help="Warmup: share of steps (<1) or step count.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (overrides epochs).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Training seed (also picks each epoch's variants).")] = None,
    freeze_encoder: Annotated[Optional[bool], typer.Option("--freeze-encoder/--no-freeze-encoder", help="Train the decoder only.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")] = None,
    early_stopping_patience: Annotated[Optional[int], typer.Option(help="Evaluations without improvement before stopping (0 = off).")] = None,
    lr_scheduler: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: cosine, linear, constant, ...")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay.")] = None,
    generation_max_length: Annotated[Optional[int], typer.Option(help="Longest transcript (tokens) generated at evaluation.")] = None,
    logging_steps: Annotated[Optional[int], typer.Option(help="Log the train loss every this many optimizer steps.")] = None,
    save_total_limit: Annotated[Optional[int], typer.Option(help="Checkpoints kept in --output-dir (the best one is always kept).")] = None,
    dataloader_workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes per device (0 = in the training process).")] = None,
    eval_max_clips: Annotated[Optional[int], typer.Option(help="Evaluate on the first N test clips only (0 = all).")] = None,
    pack: Annotated[Optional[bool], typer.Option("--pack/--no-pack", help="Pack several clips into each 30 s training window.")] = None,
    timestamp_prob: Annotated[Optional[float], typer.Option(help="Share of training windows labelled with timestamps (0-1).")] = None,
    language: Annotated[Optional[str], typer.Option(help="Language for multilingual models, e.g. arabic, french (must match features).")] = None,
    task: Annotated[Optional[str], typer.Option(help="transcribe or translate (must match features).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --output-dir.")] = False,
) -> None:
    """Fine-tune from the feature cache alone with Seq2SeqTrainer (CPU, one GPU, or torchrun/accelerate DDP)."""
    from train.trainer import run_train

    cfg = _config(config, {
        "model.name": model, "training.epochs": epochs, "training.batch_size": batch_size,
        "training.eval_batch_size": eval_batch_size, "training.grad_accum": grad_accum,
        "training.learning_rate": learning_rate, "training.warmup": warmup, "training.max_steps": max_steps,
        "training.precision": precision, "training.seed": seed, "training.freeze_encoder": freeze_encoder,
        "training.gradient_checkpointing": gradient_checkpointing,
        "training.early_stopping_patience": early_stopping_patience, "training.lr_scheduler": lr_scheduler,
        "training.weight_decay": weight_decay, "training.generation_max_length": generation_max_length,
        "training.logging_steps": logging_steps, "training.save_total_limit": save_total_limit,
        "training.dataloader_workers": dataloader_workers, "training.eval_max_clips": eval_max_clips,
        "model.language": language, "model.task": task,
        "training.pack": pack, "training.timestamp_prob": timestamp_prob,
    })
    run_train(work_dir=work, output_dir=output_dir, cfg=cfg, resume=resume)


@app.command()
@user_errors
def evaluate(
    model: ModelOpt = None,
    work: WorkOpt = Path("work"),
    config: ConfigOpt = None,
    baseline: Annotated[Optional[str], typer.Option(help="A second model to compare against (same forms as --model).")] = None,
    split: Annotated[str, typer.Option(help="Manifest split to score: test, validation or train.")] = "test",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the numbers as JSON here.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a Markdown report here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 16,
    worst: Annotated[int, typer.Option(help="How many worst clips to list.")] = 10,
) -> None:
    """WER and CER of a model (and optionally a baseline) on the cached clean clips."""
    from train.inference.evaluate import run_evaluate

    cfg = _config(config, {"model.name": model})
    run_evaluate(model=cfg.model.name, work_dir=work, cfg=cfg, baseline=baseline, split=split,
                 json_path=json_path, report_path=report, batch_size=batch_size, worst=worst)


@app.command()
@user_errors
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files or folders.")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results here (.csv, .jsonl, or subtitles: .srt, .vtt); default: print.")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per decoding batch.")] = 8,
) -> None:
    """Transcribe audio files (clips over 30 s use long-form decoding)."""
    from train.inference.transcribe import run_transcribe

    cfg = _config(config, {"model.name": model})
    run_transcribe(model=cfg.model.name, inputs=audio, cfg=cfg, output=output, batch_size=batch_size)


@app.command()
@user_errors
def export(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    model: ModelOpt = None,
    config: ConfigOpt = None,
    to: Annotated[str, typer.Option(help="Target format: ct2 (CTranslate2 / faster-whisper).")] = "ct2",
    quantization: Annotated[str, typer.Option(help="int8, int8_float16, float16 or float32.")] = "int8",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Transcribe a few clips with faster-whisper after writing.")] = True,
) -> None:
    """Export a fine-tuned model to a folder that faster-whisper loads directly."""
    from train.inference.export import run_export

    cfg = _config(config, {"model.name": model})
    run_export(model=cfg.model.name, out_dir=out, to=to, quantization=quantization, verify=verify)


@app.command("import-model")
@user_errors
def import_model(
    model: Annotated[str, typer.Argument(help="CTranslate2 / faster-whisper folder, or bundled:tiny.en.")],
) -> None:
    """Import a CTranslate2 Whisper folder into a transformers checkpoint (cached by content hash) and print its path."""
    from .models import resolve_model

    typer.echo(resolve_model(model))


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="whisper-tune")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
