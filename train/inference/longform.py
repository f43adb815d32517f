"""Long-form check: held-out clips joined into 60-90 s recordings, transcribed with `transcribe`'s long-form path
(sequential 30 s windows driven by timestamp tokens), scored against the joined transcripts.

    recordings = join_clips(usable(read_manifest(work), "test"), work / "longform", cfg)
    result = check_longform("work/model", recordings, cfg)   # WER, glued words, an SRT per recording

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
from whisper_tune.pipeline.core.constants import SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.text import normalize_text

from whisper_tune.train.metrics import word_error_rate
from whisper_tune.train.inference.decode import Segment
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
    show as they would in `transcribe`'s output."""
    from whisper_tune.train.inference.transcribe import load_clip, transcribe_clips

    from whisper_tune.train.inference.decode import DecodeOptions, TransformersDecoder

    decoder = TransformersDecoder(model, DecodeOptions(language=cfg.model.language, task=cfg.model.task))
    clips = [load_clip(r.path, cfg) for r in recordings]
    start = time.perf_counter()
    results = transcribe_clips(decoder, clips, batch_size, timed=True)
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
