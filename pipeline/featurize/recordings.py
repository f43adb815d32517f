"""The whole log-mel of each long TEST recording, stored once, so that `evaluate` decodes it long-form from the cache.

    recordings = test_recordings(rows)                    # from the usable windows: path, split, reference cues
    result = store_recordings(writer, recordings, previous, tools, cfg)

A recording (the manifest's `recording` column: its path relative to the CSV) is stored when its windows are in the
test split. Its features are what WhisperFeatureExtractor gives for the whole recording with truncation=False
(LogMel.whole: samples // 160 frames, one floor), float16, in a shard of its own; the audio is decoded once,
peak-normalized as clips are ([audio] peak_normalize) and never trimmed, so the cue times stay exact. The
fingerprint covers the recording's content hash, the feature settings and the normalization: a re-run with
neither changed touches no audio. The reference cues (start, end, text: each kept cue of its windows, at the
window's start + its relative time) live in the index entry, so an edited cue re-reads no audio either.
A recording whose audio cannot be used is reported with its reason and left out; the clips are not affected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

from whisper_tune.pipeline.cache import CacheIndex, CacheWriter, RecordingEntry, RecordingRow, ReferenceCue
from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.errors import AudioError
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.featurize.plan import source_record

log = logging.getLogger(__name__)

RECORDING_CODE_VERSION = "recording-1"
EVALUATED_SPLIT = "test"


@dataclass(frozen=True)
class TestRecording:
    recording_id: str                    # the recording's path relative to the CSV
    path: str                            # absolute path of its audio
    split: str
    seconds: float
    cues: tuple[ReferenceCue, ...]


@dataclass(frozen=True)
class RecordingsResult:
    stored: int                          # test recordings in the cache after the run
    computed: int                        # ... whose audio was decoded this run
    skipped: tuple[tuple[str, str], ...] = ()   # (recording, reason)


def test_recordings(rows) -> list[TestRecording]:
    """The test recordings of the usable manifest rows (none for clips), with the cues their windows keep, in order.
    A `--part` run's rows hold every window of its recordings (plan.part_share), so each is stored by one part."""
    import polars as pl

    if "window_index" not in rows.columns:
        return []
    rows = rows.filter((pl.col("split") == EVALUATED_SPLIT) & pl.col("window_index").is_not_null()).sort(
        ["recording", "window_index"])
    out: list[TestRecording] = []
    for (rid,), group in rows.group_by(["recording"], maintain_order=True):
        cues = tuple(ReferenceCue(round(start + a, 3), round(start + b, 3), text)
                     for start, starts, ends, texts in zip(group["start"], group["cue_starts"], group["cue_ends"],
                                                           group["cue_texts"])
                     for a, b, text in zip(starts, ends, texts))
        seconds = group["recording_seconds"].drop_nulls()
        out.append(TestRecording(recording_id=rid, path=group["path"][0], split=EVALUATED_SPLIT,
                                 seconds=float(seconds[0]) if len(seconds) else float(group["end"].max()), cues=cues))
    return out


def recording_fingerprint(source_hash: str, feature_fp: str, peak_normalize: bool) -> str:
    return stable_hex("recording", RECORDING_CODE_VERSION, source_hash, feature_fp, bool(peak_normalize))


def whole_logmel(path: str, logmel, peak_normalize: bool):
    """The recording decoded once, untrimmed (cue times stay), peak-normalized as clips are -> LogMelResult."""
    from whisper_tune.pipeline.featurize import audio

    samples = audio.load(path)
    audio.check_audible(samples)
    if peak_normalize:
        samples = audio.peak_normalize(samples)
    try:
        return logmel.whole(samples)
    except ValueError as err:
        raise AudioError(f"too short for a recording ({err})") from None


def store_recordings(writer: CacheWriter, recordings: Sequence[TestRecording], previous: CacheIndex, tools,
                     cfg: Config) -> RecordingsResult:
    """Bring the writer's recordings up to date: reuse what the fingerprint proves unchanged, compute the rest."""
    computed, skipped = 0, []
    for rec in recordings:
        old = previous.recordings.get(rec.recording_id)
        try:
            source = source_record(rec.path, old.source if old else None)
        except OSError as err:
            skipped.append((rec.recording_id, f"cannot read audio file ({err.strerror or err})"))
            continue
        fp = recording_fingerprint(source.hash, writer.meta.feature_fingerprint, cfg.audio.peak_normalize)
        entry = RecordingEntry(split=rec.split, seconds=rec.seconds, source=source, cues=rec.cues)
        ref = old.features if old else None
        if ref is not None and ref.fp == fp and ref.shard in writer.shards:
            writer.recordings[rec.recording_id] = replace(entry, features=ref)
            continue
        try:
            mel = whole_logmel(rec.path, tools.logmel(), cfg.audio.peak_normalize)
        except AudioError as err:
            skipped.append((rec.recording_id, str(err)))
            continue
        writer.add_recording(RecordingRow(rec.recording_id, fp, mel.features.astype("float16"), mel.floor), entry)
        writer.save()
        computed += 1
    for rid, reason in skipped:
        log.warning(f"features: test recording {rid} left out of long-form evaluation: {reason}")
    return RecordingsResult(stored=len(writer.recordings), computed=computed, skipped=tuple(skipped))
