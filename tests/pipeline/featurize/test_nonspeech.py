"""The non-speech pool (pipeline/featurize/nonspeech.py, pipeline/cache/nonspeech.py): its sources, its
fingerprint (a re-run skips it, a changed source rebuilds it), its damage check, and that it stays out of the
cache's clips."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from whisper_tune.pipeline.cache import CacheError, open_cache
from whisper_tune.pipeline.cache.nonspeech import HELDOUT, TRAIN, pool_path, read_pool
from whisper_tune.pipeline.featurize.nonspeech import noise_floor, non_speech_clips, trimmed_silences
from whisper_tune.pipeline.validate.manifest import write_manifest
from whisper_tune.testing import features_config, flip_bytes, manifest_row, run, tone, write_audio

SR = 16_000


def _speechy(seconds: float, lead: float, tail: float, seed: int) -> np.ndarray:
    """A loud tone between quiet noise: `lead` s before, `tail` s after."""
    rng = np.random.default_rng(seed)
    body = tone(seconds, freq=300 + 20 * seed, amp=0.5)
    return np.concatenate([0.001 * rng.standard_normal(int(lead * SR)), body,
                           0.001 * rng.standard_normal(int(tail * SR))]).astype(np.float32)


def test_trimmed_silences_are_the_removed_parts_at_the_clip_gain():
    clip = _speechy(1.0, 0.8, 0.3, 0)
    parts = trimmed_silences(clip, top_db=30, normalize=True)
    assert len(parts) == 1                        # the 0.3 s tail is shorter than MIN_SILENCE_S
    gain = 1 / np.abs(clip).max()
    assert 0.6 * SR < parts[0].size <= 0.8 * SR
    np.testing.assert_allclose(parts[0], clip[: parts[0].size] * gain, rtol=1e-5)
    assert trimmed_silences(clip, top_db=0, normalize=True) == []      # no trimming, nothing removed


def test_noise_floor_is_the_quiet_part_and_generated_kinds_differ_by_seed():
    clip = _speechy(2.0, 1.0, 1.0, 1)
    noise = noise_floor(clip, top_db=30, normalize=True)
    assert noise is not None and noise.size == 3 * SR
    assert np.abs(noise).max() < 0.05            # quiet frames only (speech peaks at 1.0 after the gain)
    assert noise_floor(np.zeros(SR, np.float32), 30, True) is None        # digital silence is not a noise floor
    a, b = non_speech_clips(seed=0), non_speech_clips(4.0, seed=1)
    assert list(a) == list(b) and len(a) == 10
    assert not np.array_equal(a["white noise"][: 4 * SR], b["white noise"])


def _work(root, n_train=4, n_test=2, tail=0.7):
    rows = []
    for i in range(n_train + n_test):
        path = write_audio(root / "audio" / f"c{i}.wav", _speechy(1.0, 0.6, tail, i))
        rows.append(manifest_row(f"c{i}", path, f"clip number {i} says words", "test" if i < n_test else "train", i))
    work = root / "work"
    write_manifest(pl.DataFrame(rows), work)
    return work, rows


def test_features_stores_the_pool_fingerprinted_and_outside_the_clips(tmp_path, tiny_model):
    work, rows = _work(tmp_path)
    cfg = features_config(tiny_model, **{"augment.variants": 1})
    res = run(work, cfg)
    assert res.pool_note.startswith("features: non-speech pool built")
    pool = read_pool(work / "cache")
    train, held = pool.part(TRAIN), pool.part(HELDOUT)
    kinds = {c.kind for c in train}
    assert kinds == {"silence", "noise", "generated"}
    assert sum(c.kind == "generated" for c in train) == 10 and sum(c.kind == "generated" for c in held) == 10
    assert {c.name.split("/")[0] for c in train if c.kind != "generated"} == {"c2", "c3", "c4", "c5"}
    assert {c.name.split("/")[0] for c in held if c.kind != "generated"} <= {"c0", "c1"}
    assert all(c.features.dtype == np.float16 and c.features.shape[0] == 80 for c in pool.clips)
    assert all(c.padded().shape == (80, 3000) for c in pool.clips[:3])
    cache = open_cache(work)                       # the pool is no clip: counts and splits are unchanged
    assert len(cache) == 6 and sorted(cache.clip_ids()) == [f"c{i}" for i in range(6)]

    before = pool_path(work / "cache").read_bytes()
    again = run(work, cfg)
    assert again.pool_note == "features: non-speech pool up to date" and again.no_audio_work
    assert pool_path(work / "cache").read_bytes() == before

    write_audio(work.parent / "audio" / "c3.wav", _speechy(1.2, 0.9, 0.7, 9))       # a train clip changed
    changed = run(work, cfg)
    assert changed.pool_note.startswith("features: non-speech pool built")
    assert read_pool(work / "cache").fingerprint != pool.fingerprint


def test_a_damaged_pool_is_refused_and_rebuilt(tmp_path, tiny_model):
    work, _ = _work(tmp_path, n_train=2, n_test=1)
    cfg = features_config(tiny_model, **{"augment.variants": 1})
    run(work, cfg)
    flip_bytes(pool_path(work / "cache"), n=64, where=0.6)
    with pytest.raises(CacheError, match="not a usable non-speech pool.*whisper-tune features"):
        read_pool(work / "cache")
    assert run(work, cfg).pool_note.startswith("features: non-speech pool built")
    assert read_pool(work / "cache") is not None


def test_a_cache_without_a_pool_reads_as_none(tmp_path):
    (tmp_path / "cache").mkdir()
    assert read_pool(tmp_path / "cache") is None
