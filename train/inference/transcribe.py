"""`whisper-tune transcribe`: text for new audio files with a (fine-tuned) model.

    whisper-tune transcribe --model work/model meeting.mp3 recordings/ -o out.csv

- Inputs are files or folders (searched recursively for the extensions in constants.AUDIO_EXTENSIONS).
- Audio is decoded, trimmed and peak-normalized exactly like the training clips (config [audio]).
- Clips up to 30 s are decoded in batches of one 30 s window each; longer clips go through transformers'
  long-form decoding (sequential windows driven by timestamps), also batched.
- Output: "path<TAB>text" lines on stdout, or a file: .csv (path,text) or .jsonl / .json (JSON lines), or
  subtitles: .srt / .vtt with Whisper's segment timestamps (one file per input; see train/inference/subtitles).
- CUDA runs in bf16 (fp16 where bf16 is missing); the CPU in float32.
- A bad input (missing file, undecodable file, folder without audio) is reported on stderr and skipped;
  the others are still transcribed and written, and the command then exits non-zero.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from whisper_tune.pipeline.featurize.audio import load, prepare
from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.constants import AUDIO_EXTENSIONS, N_SAMPLES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import AudioError, ConfigError
from whisper_tune.pipeline.core.fileio import atomic_write_text

from whisper_tune.train.inference.decode import DecodeOptions, TransformersDecoder

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass(frozen=True)
class Transcript:
    path: str
    text: str


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


def output_format(output: Path | None) -> str:
    """'print', 'csv' or 'jsonl' from the --output suffix (ConfigError for anything else)."""
    if output is None:
        return "print"
    suffix = output.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".srt", ".vtt"):
        return suffix[1:]
    raise ConfigError(f"--output {output}: unknown format {suffix or '(no suffix)'!r}; "
                      "use a .csv, .jsonl, .srt or .vtt file, or leave --output out to print")


def collect_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[Failure]]:
    """Audio files named directly or found (recursively) in folders, in order, without duplicates."""
    files: list[Path] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                failures.append(Failure(str(given), "folder has no audio files (looked for "
                                        + ", ".join(AUDIO_EXTENSIONS) + ")"))
        elif path.exists():
            found = [path]
        else:
            failures.append(Failure(str(given), "file not found"))
            found = []
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, failures


def load_clip(path: Path, cfg: Config) -> np.ndarray:
    """Mono float32 16 kHz, trimmed and peak-normalized like the training clips; silence gives an empty array."""
    samples = load(path)
    if samples.size == 0 or not np.any(samples):
        return np.zeros(0, dtype=np.float32)
    return prepare(samples, top_db=cfg.audio.trim_top_db, normalize=cfg.audio.peak_normalize)


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length; short (<= 30 s) and long clips never share a batch."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] > N_SAMPLES, lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and (lengths[groups[-1][0]] > N_SAMPLES) == (lengths[i] > N_SAMPLES):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def transcribe_clips(decoder, clips: Sequence[np.ndarray], batch_size: int, timed: bool = False) -> list:
    """Texts for mono 16 kHz clips, in order. `decoder` is a decode.TransformersDecoder. timed=True:
    each clip's list of subtitles.Segment instead (Whisper's timestamps)."""
    from whisper_tune.train.inference.subtitles import timed_segments

    fe = decoder.processor.feature_extractor
    texts: list = [[] if timed else ""] * len(clips)
    for group in batches_by_length([c.size for c in clips], batch_size):
        todo = [i for i in group if clips[i].size]
        if not todo:
            continue
        audio = [clips[i] for i in todo]
        mask = None
        if max(a.size for a in audio) <= N_SAMPLES:
            feats = fe(audio, sampling_rate=SAMPLE_RATE_HZ, return_tensors="np").input_features
        else:
            enc = fe(audio, sampling_rate=SAMPLE_RATE_HZ, return_tensors="np", truncation=False,
                     padding="longest", return_attention_mask=True)
            feats, mask = enc.input_features, enc.attention_mask
        out = timed_segments(decoder, feats, mask) if timed else decoder.generate_texts(feats, attention_mask=mask)
        for i, text in zip(todo, out):
            texts[i] = text
    return texts


def render(transcripts: Sequence[Transcript], fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "text"])
        writer.writerows([t.path, t.text] for t in transcripts)
        return buf.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps({"path": t.path, "text": t.text}, ensure_ascii=False) + "\n" for t in transcripts)
    return "".join(f"{t.path}\t{t.text}\n" for t in transcripts)


def run_transcribe(*, model: str, inputs: Sequence[Path], cfg: Config, output: Path | None = None,
                   batch_size: int = 8, max_new_tokens: int | None = None) -> list[Transcript]:
    """Transcribe every input (see the module doc). max_new_tokens: per 30 s window (default: whole context)."""
    fmt = output_format(output)
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected 1 or more")
    if not inputs:
        raise AudioError("no audio given; pass audio files or folders")
    files, failures = collect_inputs(inputs)
    attempted = len(files) + len(failures)
    clips: list[np.ndarray] = []
    good: list[Path] = []
    if fmt in ("srt", "vtt"):  # subtitle times count from the file's start: keep its leading silence
        cfg = replace(cfg, audio=replace(cfg.audio, trim_top_db=0.0))
    for path in files:
        try:
            clips.append(load_clip(path, cfg))
            good.append(path)
        except AudioError as err:
            failures.append(Failure(str(path), str(err)))
    transcripts: list[Transcript] = []
    if good:
        options = DecodeOptions(language=cfg.model.language, task=cfg.model.task)
        if max_new_tokens is not None:
            options = DecodeOptions(language=options.language, task=options.task, max_new_tokens=max_new_tokens)
        decoder = TransformersDecoder(model, options)
        if fmt in ("srt", "vtt"):
            return _write_subtitles(decoder, clips, good, batch_size, output, fmt, failures, attempted)
        texts = transcribe_clips(decoder, clips, batch_size)
        transcripts = [Transcript(str(p), t) for p, t in zip(good, texts)]
        text = render(transcripts, fmt)
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            atomic_write_text(output, text)
            print(f"wrote {len(transcripts)} transcripts to {output}", file=sys.stderr)
    _raise_failures(failures, attempted)
    return transcripts


def _write_subtitles(decoder, clips, good, batch_size, output, fmt, failures, attempted) -> list[Transcript]:
    """One .srt / .vtt per input (whisper_tune.train.inference.subtitles.subtitle_paths), from Whisper's timestamps."""
    from whisper_tune.train.inference.subtitles import render_subtitles, subtitle_paths

    segments = transcribe_clips(decoder, clips, batch_size, timed=True)
    for path, segs in zip(subtitle_paths(output, good), segments):
        atomic_write_text(path, render_subtitles(segs, fmt))
        print(f"wrote {len(segs)} subtitle cues to {path}", file=sys.stderr)
    _raise_failures(failures, attempted)
    return [Transcript(str(p), "".join(s.text for s in segs).strip()) for p, segs in zip(good, segments)]


def _raise_failures(failures: list[Failure], attempted: int) -> None:
    if len(failures) == 1:
        raise AudioError(_one_line(failures[0]))
    if failures:
        for f in failures:
            print(f"error: {_one_line(f)}", file=sys.stderr)
        raise AudioError(f"{len(failures)} of {attempted} inputs could not be transcribed (listed above)")


def _one_line(f: Failure) -> str:
    return f"{f.path}: {f.reason}"
