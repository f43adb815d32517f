"""The cache reader: round trips through write_examples, trimmed storage, and refusal of corrupted or foreign
shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from whisper_tune.testing import only_segment, rewrite_segment
from whisper_tune.testing import synthetic as _examples
from whisper_tune.pipeline.cache import (LABEL_KIND, CacheIndex, ClipEntry, FeatureCache, IndexMeta, RowRef,
                                         load_merged_index, open_cache, save_index, write_examples)
from whisper_tune.pipeline.core.constants import N_FRAMES
from whisper_tune.pipeline.core.errors import CacheError


def test_round_trip(tmp_path):
    exs = _examples()
    cache = write_examples(tmp_path / "cache", exs, model="m", tokenizer_fingerprint="tf", shard_max_mb=0.05)
    assert len(cache) == 3 and cache.clip_ids() == ["clip0", "clip1", "clip2"]
    assert cache.clip_ids("test") == ["clip0"] and cache.clip_ids("train") == ["clip1", "clip2"]
    assert cache.meta.n_mels == 80 and cache.meta.variants == 2 and cache.meta.tokenizer_fingerprint == "tf"
    assert len(list((tmp_path / "cache").glob("*.arrow"))) > 2      # bounded shards
    for ex in exs:
        got = cache.get(ex.clip_id, ex.variant)
        assert got.features.dtype == np.float16 and np.array_equal(got.features, ex.features)
        assert got.floor == pytest.approx(ex.floor) and got.text == ex.text and got.split == ex.split
        assert got.labels.dtype == np.int32 and np.array_equal(got.labels, ex.labels)
        padded = got.padded()
        assert padded.shape == (80, N_FRAMES) and padded.dtype == np.float32
        t = ex.features.shape[1]
        assert np.array_equal(padded[:, :t], ex.features.astype(np.float32))
        assert np.all(padded[:, t:] == np.float32(got.floor))
    assert cache.variants("clip1") == [0, 1]
    with pytest.raises(KeyError):
        cache.get("clip1", 5)
    with pytest.raises(KeyError):
        cache.get("nope")
    assert len(open_cache(tmp_path)) == 3   # WORK/cache


def test_missing_cache_says_how_to_build_it(tmp_path):
    with pytest.raises(CacheError, match=r"whisper-tune features --work"):
        open_cache(tmp_path)
    (tmp_path / "cache").mkdir()
    with pytest.raises(CacheError, match=r"whisper-tune features --work"):
        open_cache(tmp_path)


def _flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_shard_is_refused(tmp_path):
    write_examples(tmp_path / "cache", _examples(), shard_max_mb=64)
    shard = next(p for p in (tmp_path / "cache").glob("*-feat-*.arrow"))
    _flip(shard)
    cache = open_cache(tmp_path)     # opening is cheap; the checksum is checked on first use
    with pytest.raises(CacheError, match=r"corrupted.*re-run `whisper-tune features --work"):
        cache.get("clip1", 0)
    with pytest.raises(CacheError, match="corrupted"):
        cache.verify()


def test_truncated_and_missing_shards_are_refused(tmp_path):
    write_examples(tmp_path / "cache", _examples())
    shard = next((tmp_path / "cache").glob("*-lab-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CacheError, match="corrupted"):
        open_cache(tmp_path).get("clip0")
    shard.unlink()
    with pytest.raises(CacheError, match="missing"):
        open_cache(tmp_path)


def test_foreign_shard_is_refused_even_with_a_matching_checksum(tmp_path):
    a = tmp_path / "a" / "cache"
    b = tmp_path / "b" / "cache"
    write_examples(a, _examples(seed=1))
    write_examples(b, _examples(seed=2))
    ours = next(a.glob("*-feat-*.arrow"))
    theirs = next(b.glob("*-feat-*.arrow"))
    shutil.copyfile(theirs, ours)
    theirs_info = load_merged_index(b).shards[theirs.name]   # someone "fixed" the checksum by hand
    rewrite_segment(only_segment(a.parent), doc=lambda d: d["shards"][ours.name].update(
        checksum=theirs_info.checksum, size=theirs_info.size))
    with pytest.raises(CacheError, match="foreign or stale"):
        FeatureCache(a).get("clip1", 1)


def test_not_an_index(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "index.json").write_text('{"hello": 1}')
    with pytest.raises(CacheError, match="not a usable feature cache index"):
        open_cache(tmp_path)


def test_alias_variant_reads_as_the_clean_one(tmp_path):
    """A variant stored as an alias (no augmentation fired) returns variant 0's features under its own number."""
    from whisper_tune.pipeline.cache import FEATURE_KIND, FeatureRow, LabelRow, write_shard

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    feats = np.ones((80, 10), np.float16)
    fs = write_shard(cache_dir, "t", FEATURE_KIND, [FeatureRow("c", 0, "f0", feats, -0.3),
                                                     FeatureRow("c", 1, "f1", None, 0.0, alias_of=0)])
    ls = write_shard(cache_dir, "t", LABEL_KIND, [LabelRow("c", np.array([1, 2], np.int32), "x", "l")])
    clip = ClipEntry(split="train", labels=RowRef(ls.name, 0, "l"),
                     variants={0: RowRef(fs.name, 0, "f0"), 1: RowRef(fs.name, 1, "f1", alias=0)})
    index = CacheIndex(meta=IndexMeta(n_mels=80, variants=2, model="m", tokenizer_fingerprint="t"),
                       shards={fs.name: fs, ls.name: ls}, clips={"c": clip})
    save_index(cache_dir / "index.json", index)
    cache = open_cache(tmp_path)
    assert cache.variants("c") == [0, 1]
    one = cache.get("c", 1)
    assert one.variant == 1 and np.array_equal(one.features, feats) and one.floor == pytest.approx(-0.3)
