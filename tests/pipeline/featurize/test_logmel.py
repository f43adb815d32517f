"""Log-mel parity with WhisperFeatureExtractor (80 and 128 bins, clips from under 1 s to just under 30 s),
trimmed storage rebuilt to (n_mels, 3000), and the NumPy silence trim against librosa's."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_tune.pipeline.featurize.audio import trim
from whisper_tune.pipeline.cache import CachedExample
from whisper_tune.pipeline.core.constants import N_FRAMES, N_SAMPLES
from whisper_tune.pipeline.featurize.logmel import LogMel, frames_reached, padded_region

LENGTHS = (1, 199, 201, 8_000, 16_000 * 7 + 3, 16_000 * 15 + 77, N_SAMPLES - 1)


def _speechish(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16_000
    x = 0.4 * np.sin(2 * np.pi * (150 + 50 * np.sin(3 * t)) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (x + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module", params=[80, 128])
def extractor(request):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=request.param)


def test_frames_reached_counts_every_window_touching_audio():
    for n in (1, 159, 160, 161, 1000, N_SAMPLES - 1, N_SAMPLES, N_SAMPLES + 5):
        t = frames_reached(n)
        # frame i covers samples i*160-200 .. i*160+200: frame t-1 touches the audio, frame t does not
        assert (t - 1) * 160 - 200 < min(n, N_SAMPLES)
        assert t == N_FRAMES or t * 160 - 200 >= n


def test_padded_region_equals_numpy_reflect_padding():
    rng = np.random.default_rng(0)
    for n in (1, 150, 201, 5_000, N_SAMPLES - 3, N_SAMPLES):
        a = rng.standard_normal(n).astype(np.float32)
        full = np.pad(np.pad(a, (0, N_SAMPLES - n)), 200, mode="reflect")
        t = frames_reached(n)
        length = (t - 1) * 160 + 400
        np.testing.assert_array_equal(padded_region(a, length), full[:length])


@pytest.mark.parametrize("n", LENGTHS)
def test_logmel_matches_whisper_feature_extractor(extractor, n):
    audio = _speechish(n, seed=n)
    ref = extractor(audio, sampling_rate=16_000).input_features[0]
    mel = LogMel.from_feature_extractor(extractor)(audio)
    n_mels = extractor.feature_size
    assert mel.features.shape == (n_mels, frames_reached(n))
    exact = CachedExample("c", 0, "train", mel.features, mel.floor, np.zeros(1, np.int32), "").padded()
    stored = CachedExample("c", 0, "train", mel.features.astype(np.float16), mel.floor,
                           np.zeros(1, np.int32), "").padded()
    assert exact.shape == stored.shape == (n_mels, N_FRAMES) and stored.dtype == np.float32
    assert np.abs(exact - ref).max() <= 1e-4
    assert np.abs(stored - ref).max() <= 2e-3
    if frames_reached(n) < N_FRAMES:   # everything past the stored frames is the per-clip floor
        assert np.all(ref[:, frames_reached(n):] == np.float32(mel.floor))


def test_logmel_is_independent_of_other_calls(extractor):
    """Same clip, same bytes, whatever was computed before (what byte-identical caches rely on)."""
    lm = LogMel.from_feature_extractor(extractor)
    a, b = _speechish(20_000, 1), _speechish(90_000, 2)
    first = lm(a).features.tobytes()
    lm(b)
    assert lm(a).features.tobytes() == first


def test_fingerprint_depends_on_mel_bins():
    from transformers import WhisperFeatureExtractor

    fp80 = LogMel.from_feature_extractor(WhisperFeatureExtractor(feature_size=80)).fingerprint
    fp128 = LogMel.from_feature_extractor(WhisperFeatureExtractor(feature_size=128)).fingerprint
    assert fp80 != fp128
    assert fp80 == LogMel.from_feature_extractor(WhisperFeatureExtractor(feature_size=80)).fingerprint


def test_numpy_trim_equals_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(300, 60_000))
        x = np.zeros(n, np.float32)
        a = int(rng.integers(0, n))
        b = int(rng.integers(a, n + 1))
        x[a:b] = rng.standard_normal(b - a) * rng.uniform(0.001, 1)
        x += (rng.standard_normal(n) * 10 ** rng.uniform(-6, -2)).astype(np.float32)
        for top_db in (20, 30, 60):
            want, _ = librosa.effects.trim(x, top_db=top_db)
            np.testing.assert_array_equal(trim(x, top_db), want)
