"""Long-form decoding of log-mel features (one loop for audio and for the cache), the boundary metric, and the
long-form check: held-out clips joined into 60-90 s recordings, decoded long-form (sequential 30 s windows driven
by timestamp tokens), scored against the joined transcripts.

    decoded = decode_features(decoder, features, floors)     # whole recordings' log-mel -> text + timed segments
    counts = boundary_counts(decoded[0].segments, cues)       # segment starts / ends within 0.5 s of a cue's
    recordings = join_clips(usable(read_manifest(work), "test"), work / "longform", cfg)
    result = check_longform("work/model", recordings, cfg)   # WER, glued words, an SRT per recording

The audio path (check_longform) computes the features of each recording as WhisperFeatureExtractor does with
truncation=False; `evaluate` reads the same features from the cache (features stores each test recording's whole
log-mel): both go through decode_features, so a recording scores the same either way.

Fine-tuning on short clips with <|notimestamps|> labels is what usually breaks long-form decoding; this shows
whether it survived: WER beside the short-clip WER, words glued at segment joins ("doseis" for "dose is", the
sign of labels without Whisper's leading space), and the timestamps the SRT got.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.constants import (CUE_BOUNDARY_TOLERANCE_S, LOG_CLAMP, LOG_RANGE, N_FRAMES,
                                                  SAMPLE_RATE_HZ)
from whisper_tune.pipeline.core.text import normalize_text

from whisper_tune.train.metrics import word_error_rate
from whisper_tune.train.inference.decode import Decoded, Segment
from whisper_tune.train.inference.subtitles import render_subtitles

RECORDING_S = (60.0, 90.0)       # shortest and longest joined recording
GAP_S = 0.8                      # silence between the joined clips


@dataclass(frozen=True)
class Recording:
    path: Path
    reference: str
    seconds: float
    clips: int


@dataclass(frozen=True)
class LongformResult:
    model: str
    wer: float                           # percent, basic normalization, over all recordings
    glued: tuple[str, ...]               # hypothesis words that are two consecutive reference words glued
    cues: int                            # subtitle cues over all recordings
    timed_cues: int                      # cues that start after 0:00 (timestamps beyond the first)
    seconds: float                       # decoding time
    hypotheses: tuple[str, ...]


def silence_floor(features: np.ndarray) -> float:
    """The value a frame of silence has in Whisper log-mel features: the (max - 8) floor after (x + 4) / 4 scaling,
    never below that of log10 of the clamp."""
    return max(float(np.max(features)) - LOG_RANGE / 4.0, (float(np.log10(LOG_CLAMP)) + 4.0) / 4.0)


def decode_features(decoder, features: Sequence[np.ndarray], floors: Sequence[float],
                    batch_size: int = 4) -> list[Decoded]:
    """Whole recordings' log-mel (n_mels, T) each, T any length -> text and timed segments, in order: the one
    long-form loop. A batch is padded to its longest (at least one 30 s window) with each recording's silence
    and an attention mask of its own frames, so transformers' long-form loop stops at each recording's end."""
    out: list[Decoded] = [Decoded("")] * len(features)
    order = sorted(range(len(features)), key=lambda i: (features[i].shape[1] > N_FRAMES, features[i].shape[1], i))
    groups: list[list[int]] = []
    for i in order:             # similar lengths together; recordings within one window never with longer ones
        long_i = features[i].shape[1] > N_FRAMES
        if groups and len(groups[-1]) < batch_size and (features[groups[-1][0]].shape[1] > N_FRAMES) == long_i:
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        width = max(N_FRAMES, max(features[i].shape[1] for i in group))
        batch = np.stack([np.pad(np.asarray(features[i], np.float32), ((0, 0), (0, width - features[i].shape[1])),
                                 constant_values=floors[i]) for i in group])
        mask = np.stack([np.arange(width) < features[i].shape[1] for i in group]).astype(np.int64)
        for i, result in zip(group, decoder.generate(batch, mask if width > N_FRAMES else None, timed=True)):
            out[i] = result
    return out


@dataclass(frozen=True)
class BoundaryCounts:
    """Predicted segments whose start (end) lands within the tolerance of some reference cue's start (end)."""

    segments: int
    starts_near: int
    ends_near: int

    def __add__(self, other: "BoundaryCounts") -> "BoundaryCounts":
        return BoundaryCounts(self.segments + other.segments, self.starts_near + other.starts_near,
                              self.ends_near + other.ends_near)

    @property
    def start_share(self) -> float | None:
        """Percent of segment starts near a cue start; None without segments."""
        return round(100.0 * self.starts_near / self.segments, 2) if self.segments else None

    @property
    def end_share(self) -> float | None:
        return round(100.0 * self.ends_near / self.segments, 2) if self.segments else None


def boundary_counts(segments: Sequence[Segment], cues: Sequence[tuple[float, float]],
                    tolerance_s: float = CUE_BOUNDARY_TOLERANCE_S) -> BoundaryCounts:
    """How many segment starts and ends land within tolerance_s of a reference cue's start and end (cues: (start,
    end) in seconds of the recording). A model that learned only contiguous subtitles starts every segment at the
    previous one's end, so its starts miss the cue starts that follow a pause."""
    starts = np.asarray([c[0] for c in cues], np.float64)
    ends = np.asarray([c[1] for c in cues], np.float64)

    def near(t: float, refs: np.ndarray) -> bool:
        return bool(refs.size) and float(np.min(np.abs(refs - t))) <= tolerance_s + 1e-9

    return BoundaryCounts(len(segments), sum(near(s.start, starts) for s in segments),
                          sum(near(s.end, ends) for s in segments))


def group_clips(durations: Sequence[float], bounds: tuple[float, float] = RECORDING_S,
                gap_s: float = GAP_S) -> list[list[int]]:
    """Consecutive clip indices grouped into recordings of bounds[0]..bounds[1] seconds (gaps included); a
    remainder shorter than bounds[0] joins the last recording if it still fits, else it is left out (or is
    the one recording, when the clips are too few for bounds[0])."""
    groups: list[list[int]] = []
    current: list[int] = []
    length = 0.0
    for i, d in enumerate(durations):
        if current and length + gap_s + d > bounds[1]:
            groups.append(current)
            current, length = [], 0.0
        length += (gap_s if current else 0.0) + d
        current.append(i)
        if length >= bounds[0]:
            groups.append(current)
            current, length = [], 0.0
    if current:
        tail = sum(durations[i] + gap_s for i in current)
        if not groups:
            groups.append(current)
        elif sum(durations[i] + gap_s for i in groups[-1]) + tail <= bounds[1]:
            groups[-1] += current
    return groups


def join_clips(rows: Sequence[dict], out_dir: Path, cfg: Config) -> list[Recording]:
    """Recordings (WAV) and their references from manifest rows (path, text), clips prepared like training's."""
    import soundfile as sf

    from whisper_tune.train.inference.transcribe import load_clip

    audio = [load_clip(Path(r["path"]), cfg) for r in rows]
    gap = np.zeros(int(GAP_S * SAMPLE_RATE_HZ), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = []
    for n, group in enumerate(group_clips([a.size / SAMPLE_RATE_HZ for a in audio])):
        joined = np.concatenate([p for i in group for p in (audio[i], gap)][:-1])
        path = out_dir / f"recording_{n:02d}.wav"
        sf.write(str(path), joined, SAMPLE_RATE_HZ)
        recordings.append(Recording(path, " ".join(rows[i]["text"].strip() for i in group),
                                    round(joined.size / SAMPLE_RATE_HZ, 2), len(group)))
    return recordings


def glued_words(reference: str, hypothesis: str) -> list[str]:
    """Hypothesis words that are not reference words but two consecutive reference words written as one."""
    ref = normalize_text(reference).split()
    known = set(ref)
    pairs = {a + b for a, b in zip(ref, ref[1:])}
    return [w for w in normalize_text(hypothesis).split() if w not in known and w in pairs]


def check_longform(model: str, recordings: Sequence[Recording], cfg: Config, out_dir: Path | None = None,
                   batch_size: int = 4) -> LongformResult:
    """Transcribe each recording once with timestamps (long-form), write its SRT to out_dir, and score it.
    The text is the segments' own text, joined as transformers joins them (no space added), so glued words
    show as they would in `transcribe`'s output. Features are computed per recording, as WhisperFeatureExtractor
    does for a whole recording, and decoded by decode_features (the loop `evaluate` runs on cached recordings)."""
    from whisper_tune.train.inference.transcribe import load_clip

    from whisper_tune.train.inference.decode import DecodeOptions, TransformersDecoder

    decoder = TransformersDecoder(model, DecodeOptions(language=cfg.model.language, task=cfg.model.task))
    fe = decoder.processor.feature_extractor
    features = [fe(load_clip(r.path, cfg), sampling_rate=SAMPLE_RATE_HZ, return_tensors="np", truncation=False,
                   padding="longest").input_features[0] for r in recordings]
    start = time.perf_counter()
    results = decode_features(decoder, features, [silence_floor(f) for f in features], batch_size)
    seconds = time.perf_counter() - start
    segments: list[tuple[Segment, ...]] = [r.segments for r in results]
    hyps = [r.text for r in results]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for r, segs in zip(recordings, segments):
            (out_dir / f"{r.path.stem}.srt").write_text(render_subtitles(segs, "srt"), encoding="utf-8")
    refs = [r.reference for r in recordings]
    return LongformResult(
        model=model, wer=round(word_error_rate(refs, hyps), 2),
        glued=tuple(w for r, h in zip(refs, hyps) for w in glued_words(r, h)),
        cues=sum(len(s) for s in segments), timed_cues=sum(1 for segs in segments for s in segs if s.start > 0),
        seconds=round(seconds, 1), hypotheses=tuple(hyps))


def save_references(recordings: Sequence[Recording], path: Path) -> None:
    path.write_text(json.dumps([{"path": str(r.path), "seconds": r.seconds, "clips": r.clips,
                                 "reference": r.reference} for r in recordings], indent=2), encoding="utf-8")


def demo_longform(test_rows: Sequence[dict], work_dir: Path, cfg: Config, models: dict[str, str]) -> dict:
    """The demo's check: recordings from the test rows under WORK/longform, each model's result (by label),
    its SRTs under WORK/longform/LABEL/; printed and returned as JSON-ready numbers."""
    folder = Path(work_dir) / "longform"
    recordings = join_clips(test_rows, folder, cfg)
    save_references(recordings, folder / "references.json")
    seconds = [r.seconds for r in recordings]
    print(f"{len(recordings)} recordings of {min(seconds):.0f}-{max(seconds):.0f} s from "
          f"{sum(r.clips for r in recordings)} held-out test clips", flush=True)
    out: dict = {"recordings": len(recordings), "seconds": seconds}
    for label, model in models.items():
        res = check_longform(model, recordings, cfg, out_dir=folder / label)
        print(f"  {label:<11} long-form WER {res.wer:6.1f} %, glued words {len(res.glued)} "
              f"{list(res.glued[:5])}, subtitle cues {res.cues} ({res.timed_cues} after 0:00)", flush=True)
        out[label] = {"wer": res.wer, "glued": list(res.glued), "cues": res.cues, "timed_cues": res.timed_cues,
                      "seconds": res.seconds, "hypotheses": list(res.hypotheses)}
    return out
