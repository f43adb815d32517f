"""`evaluate` on long recordings: each cached test recording decoded whole, long-form, from its stored log-mel.

    scores = evaluate_recordings("work/model", cache, cache.recording_ids("test"), options=options)
    scores.wer, scores.boundaries.start_share, scores.per_recording[0].wer

Per recording and in total: WER against the recording's joined cue text (the per-clip WER's normalizer), and the
shares of predicted segment starts and ends that land within 0.5 s of a reference cue's start and end
(longform.boundary_counts). The features come from the cache alone (no audio library); decoding is the
transformers back end's long-form loop (longform.decode_features), the one the audio path uses too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.train.metrics import error_counts, word_error_rate

from whisper_tune.train.inference.decode import Decoded, DecodeOptions
from whisper_tune.train.inference.longform import BoundaryCounts, boundary_counts, decode_features


@dataclass(frozen=True)
class RecordingScore:
    recording: str
    seconds: float                  # the recording's length
    wer: float                      # percent, normalized text
    errors: int
    reference_words: int
    segments: int                   # segments the model predicted
    start_share: float | None       # percent of segment starts within 0.5 s of a cue start (None: no segment)
    end_share: float | None
    hypothesis: str


@dataclass(frozen=True)
class LongformScores:
    model: str
    recordings: int
    audio_seconds: float
    wer: float                      # percent, normalized text, over all recordings together
    boundaries: BoundaryCounts      # summed over the recordings
    seconds: float                  # decoding time
    per_recording: tuple[RecordingScore, ...]

    def to_json(self) -> dict:
        b = self.boundaries
        return {"model": self.model, "recordings": self.recordings, "audio_seconds": self.audio_seconds,
                "wer": self.wer, "segments": b.segments, "start_share": b.start_share, "end_share": b.end_share,
                "seconds": self.seconds, "per_recording": [asdict(r) for r in self.per_recording]}


def score_recordings(model: str, recordings: Sequence, decoded: Sequence[Decoded],
                     seconds: float = 0.0) -> LongformScores:
    """Scores of decoded recordings (CachedRecording: id, seconds, cues, reference) -> per recording and total."""
    per, total = [], BoundaryCounts(0, 0, 0)
    for rec, dec in zip(recordings, decoded):
        counts = boundary_counts(dec.segments, [(c.start, c.end) for c in rec.cues])
        errors = error_counts([rec.reference], [dec.text], "word")
        per.append(RecordingScore(rec.recording_id, round(float(rec.seconds), 2), round(errors.percent, 2),
                                  errors.errors, errors.reference_units, counts.segments, counts.start_share,
                                  counts.end_share, dec.text))
        total = total + counts
    return LongformScores(model=model, recordings=len(per), audio_seconds=round(sum(r.seconds for r in per), 2),
                          wer=round(word_error_rate([r.reference for r in recordings], [d.text for d in decoded]), 2),
                          boundaries=total, seconds=round(seconds, 2), per_recording=tuple(per))


def evaluate_recordings(spec: str, cache, recording_ids: Sequence[str], *, options: DecodeOptions,
                        batch_size: int = 4) -> LongformScores:
    """Decode each cached recording whole with `spec` (transformers back end) and score it."""
    from whisper_tune.train.inference.decode import TransformersDecoder

    decoder = TransformersDecoder(spec, options)
    if decoder.n_mels != int(cache.meta.n_mels):
        raise CacheError(f"the cache holds {cache.meta.n_mels}-mel features but --model {spec} expects "
                         f"{decoder.n_mels}; rebuild it with `whisper-tune features --model {spec}`")
    recordings = [cache.recording(rid) for rid in recording_ids]
    start = time.perf_counter()
    decoded = decode_features(decoder, [r.features for r in recordings], [r.floor for r in recordings], batch_size)
    return score_recordings(spec, recordings, decoded, time.perf_counter() - start)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_longform(main: LongformScores, baseline: LongformScores | None = None) -> str:
    """The printed section: per recording and in total, for the model and the baseline."""
    models = [(main.model, main)] + ([(f"{baseline.model} (baseline)", baseline)] if baseline else [])
    lines = [f"\nlong-form: {main.recordings} test recordings decoded whole from the cache ({main.audio_seconds:.0f} s)"
             "; WER against the joined cue text, % of segment starts / ends within 0.5 s of a cue's"]
    header = ("model", "recording", "WER %", "segments", "starts %", "ends %")
    rows = [header]
    for name, scores in models:
        for r in scores.per_recording:
            rows.append((name, r.recording, f"{r.wer:.2f}", str(r.segments), _share(r.start_share),
                         _share(r.end_share)))
        b = scores.boundaries
        rows.append((name, "all", f"{scores.wer:.2f}", str(b.segments), _share(b.start_share), _share(b.end_share)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
