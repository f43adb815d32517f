"""Packed training windows: window building, closeness to the joined audio's log-mel, Whisper timestamp labels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from whisper_tune.pipeline.core.constants import HOP_LENGTH, N_FRAMES, SAMPLE_RATE_HZ
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.models import load_processor
from whisper_tune.pipeline.core.tokens import timestamp_token
from whisper_tune.train.data import TrainDataset, training_dataset
from whisper_tune.train.packing import (EDGE_FRAMES, GAP_FRAMES, LabelTokens, Piece, padding_share, plan_windows,
                                        split_to, window_features, window_labels)
from whisper_tune.testing import build_cache


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_processor(str(tiny_model)).tokenizer


@pytest.fixture(scope="module")
def cache(tiny_model, tmp_path_factory):
    return build_cache(tmp_path_factory.mktemp("work"), tiny_model, n_train=24, n_test=2, variants=3,
                       frames=(200, 1400))


def _clips(n: int, seed: int = 0) -> list[tuple[str, int, int, int]]:
    rng = np.random.default_rng(seed)
    return [(f"c{i}", 0, int(rng.integers(100, 1500)), int(rng.integers(3, 40))) for i in range(n)]


def test_windows_hold_every_clip_once_within_30_s():
    clips = _clips(60)
    windows = plan_windows(clips, gap_seed=3)
    assert sorted(p.clip_id for w in windows for p in w) == sorted(c[0] for c in clips)
    assert [p.clip_id for w in windows for p in w] == [c[0] for c in clips]      # the schedule's order
    for w in windows:
        assert w[0].offset == 0 and w[-1].offset + w[-1].frames <= N_FRAMES
        for a, b in zip(w, w[1:]):
            gap = b.offset - (a.offset + a.frames)
            assert GAP_FRAMES[0] <= gap <= GAP_FRAMES[1] + 1 and b.offset % 2 == 0
    for w, nxt in zip(windows, windows[1:]):  # next-fit: the next window's first clip did not fit here
        end = w[-1].offset + w[-1].frames
        assert end + GAP_FRAMES[0] + nxt[0].frames > N_FRAMES or sum(p.text_tokens + 2 for p in w) > 0
    assert len(windows) < len(clips) / 2 and padding_share(windows) < 0.35


def test_token_budget_starts_a_new_window():
    clips = [(f"c{i}", 0, 100, 200) for i in range(4)]
    windows = plan_windows(clips, gap_seed=0, prefix_len=3, max_tokens=448)
    assert [len(w) for w in windows] == [2, 2]      # 3 + 2 * 202 + 1 = 408 fits, a third clip would not


def test_split_reaches_a_window_count_without_losing_clips():
    windows = plan_windows(_clips(40), gap_seed=1)
    more = split_to(windows, len(windows) + 5)
    assert len(more) == len(windows) + 5
    assert Counter(p.clip_id for w in more for p in w) == Counter(p.clip_id for w in windows for p in w)
    assert all(w[0].offset == 0 for w in more)
    assert split_to(windows, len(windows) - 1) == windows[:-1]


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    x = envelope * (np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.3 * rng.standard_normal(t.size))
    return (x / np.abs(x).max()).astype(np.float32)          # peak-normalized, like every cached clip


def test_window_features_match_the_joined_audio():
    """The packed window vs WhisperFeatureExtractor on the clips' audio joined with silent gaps: equal up to
    float16 rounding except 3 frames around each clip's start (the gap's last frame hears the clip's first 40
    samples; the clip's first EDGE_FRAMES frames reflected its own start where the joined audio has silence)."""
    from transformers import WhisperFeatureExtractor

    from whisper_tune.pipeline.featurize.logmel import LogMel

    fe = WhisperFeatureExtractor(feature_size=80)
    logmel = LogMel.from_feature_extractor(fe)
    audios = [_speech_like(s, i) * g for i, (s, g) in enumerate([(5.3, 1.0), (7.1, 0.05), (3.9, 0.6), (9.2, 1.0)])]
    audios = [a / np.abs(a).max() for a in audios]
    mels = [logmel(a) for a in audios]
    clips = [(f"c{i}", 0, m.features.shape[1], 5) for i, m in enumerate(mels)]
    (pieces,) = plan_windows(clips, gap_seed=0)
    packed, floor = window_features([(m.features.astype(np.float16), m.floor) for m in mels], pieces)

    joined = np.zeros(N_FRAMES * HOP_LENGTH, dtype=np.float32)
    for a, p in zip(audios, pieces):
        joined[p.offset * HOP_LENGTH: p.offset * HOP_LENGTH + a.size] = a
    ref = fe(joined, sampling_rate=SAMPLE_RATE_HZ, return_tensors="np").input_features[0]
    dense = np.full_like(ref, floor)
    dense[:, : packed.shape[1]] = packed
    diff = np.abs(dense - ref)
    edge = np.zeros(N_FRAMES, dtype=bool)
    for p in pieces:
        edge[p.offset - 1: p.offset + EDGE_FRAMES] = True
    assert diff[:, ~edge].max() < 4e-3          # float16 rounding of values around +-1.5
    assert diff[:, edge].max() < 1.0            # the frames around each clip's start: measured up to 0.79
    assert diff.mean() < 2e-3
    assert floor == max(m.floor for m in mels)


def test_timestamp_tokens_are_the_tokenizers(tokenizer):
    tokens = LabelTokens.from_tokenizer(tokenizer)
    for seconds in (0.0, 0.02, 1.23, 17.5, 30.0):
        assert tokens.timestamp(seconds) == tokenizer.convert_tokens_to_ids(timestamp_token(seconds))
    assert tokens.timestamp(31.0) == tokens.timestamp(30.0)


def test_window_labels_follow_whispers_format(tokenizer):
    tokens = LabelTokens.from_tokenizer(tokenizer)
    texts = [np.array(tokenizer(" hello world", add_special_tokens=False).input_ids),
             np.array(tokenizer(" good morning", add_special_tokens=False).input_ids)]
    prefix = np.array([tokens.sot])
    pieces = [Piece("a", 0, 0, 251, 2), Piece("b", 0, 280, 300, 2)]
    with_ts = tokenizer.convert_ids_to_tokens(window_labels(tokens, prefix, texts, pieces, True).tolist())
    assert with_ts == ["<|startoftranscript|>", "<|0.00|>", "Ġhello", "Ġworld", "<|2.50|>",
                       "<|2.80|>", "Ġgood", "Ġmorning", "<|5.78|>", "<|endoftext|>"]
    plain = window_labels(tokens, prefix, texts, pieces, False)
    assert tokenizer.convert_ids_to_tokens(plain[:2].tolist()) == ["<|startoftranscript|>", "<|notimestamps|>"]
    assert tokenizer.decode(plain, skip_special_tokens=True) == " hello world good morning"


def test_window_dataset_covers_each_clip_once_per_epoch(cache, tokenizer):
    ds = TrainDataset(cache, seed=5, pack=True, timestamp_prob=0.5, tokens=LabelTokens.from_tokenizer(tokenizer),
                      planned_epochs=3)
    n = len(ds)
    assert n < len(ds.clip_ids) / 2
    for epoch in range(3):
        items = [ds[epoch * n + i] for i in range(n)]
        ids = [c for it in items for c in it.clip_id.split("+")]
        assert sorted(ids) == sorted(cache.clip_ids("train"))
        assert all(it.features.shape[1] <= N_FRAMES and it.labels[-1] == tokens_eot(tokenizer) for it in items)
    stamped = [tokenizer.convert_ids_to_tokens(int(ds[i].labels[1])) for i in range(3 * n)]
    assert 0 < sum(s == "<|0.00|>" for s in stamped) < 3 * n      # both label forms occur
    again = TrainDataset(cache, seed=5, pack=True, timestamp_prob=0.5, tokens=LabelTokens.from_tokenizer(tokenizer),
                         planned_epochs=3)
    np.testing.assert_array_equal(again[n + 1].labels, ds[n + 1].labels)


def tokens_eot(tokenizer) -> int:
    return LabelTokens.from_tokenizer(tokenizer).eot


def test_unpacked_clips_keep_their_features_and_order(cache, tokenizer):
    plain = TrainDataset(cache, seed=5)
    single = training_dataset(cache, tokenizer, seed=5, pack=False, timestamp_prob=1.0, planned_epochs=2,
                              vocab_size=len(tokenizer))
    assert len(single) == len(plain)
    for index in (0, 7, len(plain) + 3):
        a, b = plain[index], single[index]
        assert (a.clip_id, a.variant) == (b.clip_id, b.variant)
        np.testing.assert_array_equal(a.features, b.features)
        assert tokenizer.convert_ids_to_tokens(int(b.labels[1])) == "<|0.00|>"
    assert not training_dataset(cache, tokenizer, seed=5, pack=False, timestamp_prob=0.0, planned_epochs=1,
                                vocab_size=len(tokenizer)).pack
    with pytest.raises(ConfigError, match="timestamp-prob 0"):
        training_dataset(cache, tokenizer, seed=5, pack=True, timestamp_prob=0.2, planned_epochs=1,
                         vocab_size=50363)


# Recorded from the window dataset before it became a mode of the one training dataset (same seeds, same built
# cache): packed windows and timestamped single clips must keep these items. Re-record only when
# whisper_tune.testing.synthetic_examples itself changes.
WINDOW_DIGESTS = {True: "a684f2df42efa642d798998f2e6ddc6a4ca373e213288ab3c10726e55f1d5126",
                  False: "098fc3f1b492b3bacfb6a403027b40893cd78b477ecf01ccce804debbc519b84"}


@pytest.mark.parametrize("pack", [True, False])
def test_windows_and_their_labels_are_unchanged(cache, tokenizer, pack):
    import hashlib

    ds = training_dataset(cache, tokenizer, seed=9, pack=pack, timestamp_prob=0.4, planned_epochs=2,
                          vocab_size=len(tokenizer))
    h = hashlib.sha256()
    for index in range(2 * len(ds)):
        item = ds[index]
        h.update(f"{item.clip_id}/{item.variant}/{item.floor!r}/{item.features.shape}".encode())
        h.update(np.ascontiguousarray(item.features).tobytes() + item.labels.astype(np.int32).tobytes())
    assert h.hexdigest() == WINDOW_DIGESTS[pack]


def test_the_dataset_says_what_an_epoch_feeds_the_encoder(cache, tokenizer):
    plain = training_dataset(cache, tokenizer, seed=5, pack=False, timestamp_prob=0.0, planned_epochs=1)
    assert plain.describe() == "training examples: one clip per 30 s window (24 per epoch), no timestamps"
    packed = training_dataset(cache, tokenizer, seed=5, pack=True, timestamp_prob=0.2, planned_epochs=1)
    share = padding_share(packed.windows(0))
    assert packed.describe() == (f"training examples: {len(packed)} windows per epoch of 24 clips (packed), "
                                 f"{share:.0%} of encoder frames padding, timestamps in 20% of labels")
    with pytest.raises(ValueError, match="LabelTokens: pass tokens="):
        TrainDataset(cache, seed=5, pack=True)
