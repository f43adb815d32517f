"""`features` stores the whole log-mel of each test recording once (pipeline/featurize/recordings.py): parity with
WhisperFeatureExtractor on the whole recording, its reference cues, re-runs that touch no audio, and an edited cue
that re-reads none either."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whisper_tune.pipeline.cache import open_cache
from whisper_tune.pipeline.core.config import load_config
from whisper_tune.pipeline.featurize import recordings as recs
from whisper_tune.pipeline.featurize.stage import run_features
from whisper_tune.pipeline.validate.stage import run_validate
from whisper_tune.testing import tone, write_audio

TEST_CUES = [(1.0 + 4.0 * i, 3.5 + 4.0 * i, f"test sentence number {i}") for i in range(10)]    # 1.0 .. 39.5 s
TRAIN_CUES = [(0.5 + 3.0 * i, 2.5 + 3.0 * i, f"train words {i}") for i in range(5)]


def clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    return f"00:{m:02d}:{s:02d},{ms:03d}"


def write_srt(path: Path, cues) -> None:
    path.write_text("\n".join(f"{i}\n{clock(a)} --> {clock(b)}\n{t}\n" for i, (a, b, t) in enumerate(cues, 1)),
                    encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    speech = tone(41.0, amp=0.3) * (0.6 + 0.4 * np.sin(np.arange(41 * 16_000) / 16_000 * 3.0)).astype(np.float32)
    write_audio(tmp_path / "talk.flac", speech)
    write_audio(tmp_path / "other.flac", tone(17.0, amp=0.2, freq=300.0, seed=1))
    write_srt(tmp_path / "talk.srt", TEST_CUES)
    write_srt(tmp_path / "other.srt", TRAIN_CUES)
    (tmp_path / "talks.csv").write_text("audios,subtitles,split\ntalk.flac,talk.srt,test\nother.flac,other.srt,train\n")
    return tmp_path


def featurize(work: Path, model: Path):
    return run_features(work_dir=work, cfg=load_config(None, {"model.name": str(model), "features.jobs": 1,
                                                               "augment.variants": 1}), echo=None)


def validate_and_featurize(folder: Path, model: Path) -> Path:
    work = folder / "work"
    run_validate(csv_path=folder / "talks.csv", work_dir=work, cfg=load_config(), use_model=False, echo=None)
    featurize(work, model)
    return work


def test_a_test_recording_is_stored_whole_with_its_cues(folder: Path, tiny_model: Path) -> None:
    from transformers import WhisperFeatureExtractor

    from whisper_tune.pipeline.featurize import audio

    cache = open_cache(validate_and_featurize(folder, tiny_model))
    assert cache.recording_ids() == cache.recording_ids("test") == ["talk.flac"]    # the train recording is not
    rec = cache.recording("talk.flac")
    samples = audio.peak_normalize(audio.load(folder / "talk.flac"))              # untrimmed: cue times stay
    want = WhisperFeatureExtractor.from_pretrained(tiny_model)(
        samples, sampling_rate=16_000, return_tensors="np", truncation=False, padding="longest").input_features[0]
    assert rec.features.dtype == np.float16 and rec.features.shape == want.shape == (80, 4100)
    assert np.abs(rec.features.astype(np.float32) - want).max() < 2e-3
    assert rec.padded().shape == (80, 4100) and rec.seconds == pytest.approx(41.0)
    assert [c.text for c in rec.cues] == [t for _, _, t in TEST_CUES]
    for cue, (start, end, _) in zip(rec.cues, TEST_CUES):          # window start + the cue's 0.02 s grid time
        assert abs(cue.start - start) <= 0.011 and abs(cue.end - end) <= 0.011
    assert rec.reference == " ".join(t for _, _, t in TEST_CUES)


def test_rerun_and_an_edited_cue_decode_no_audio(folder: Path, tiny_model: Path, monkeypatch) -> None:
    work = validate_and_featurize(folder, tiny_model)
    shards = sorted(p.name for p in (work / "cache").glob("*-rec-*.arrow"))
    assert len(shards) == 1
    before = open_cache(work).recording("talk.flac").features.copy()

    def no_audio(*args, **kwargs):
        raise AssertionError("a recording was decoded again")

    monkeypatch.setattr(recs, "whole_logmel", no_audio)
    validate_and_featurize(folder, tiny_model)                                    # nothing changed
    edited = [*TEST_CUES[:3], (TEST_CUES[3][0], TEST_CUES[3][1], "an edited cue"), *TEST_CUES[4:]]
    write_srt(folder / "talk.srt", edited)
    validate_and_featurize(folder, tiny_model)                                    # only a cue's text changed
    cache = open_cache(work)
    rec = cache.recording("talk.flac")
    assert len(cache.clip_ids("test")) == 2 and len(cache.clip_ids("train")) == 1     # and the windows themselves
    assert sorted(p.name for p in (work / "cache").glob("*-rec-*.arrow")) == shards
    assert np.array_equal(rec.features, before) and rec.cues[3].text == "an edited cue"


def test_unreadable_test_recording_is_left_out_with_its_reason(folder: Path, tiny_model: Path, caplog) -> None:
    work = validate_and_featurize(folder, tiny_model)
    (folder / "talk.flac").write_bytes(b"not audio any more")                     # changed after validate
    featurize(work, tiny_model)
    assert open_cache(work).recording_ids() == []
    assert "test recording talk.flac left out of long-form evaluation" in caplog.text
