"""The cache reader and writer: round trips, trimmed storage, and refusal of corrupted or foreign shards."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache import (CacheIndex, CacheLock, CachedExample, FeatureCache, LABEL_KIND, open_cache,
                            write_examples)
from pipeline.constants import N_FRAMES
from pipeline.errors import CacheError


def _examples(n_clips: int = 3, variants: int = 2, n_mels: int = 80, seed: int = 0) -> list[CachedExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_clips):
        t = int(rng.integers(50, 400))
        labels = np.array([50257, 50362, 100 + i, 200 + i, 50256], np.int32)
        for v in range(variants):
            feats = rng.uniform(-1, 1, (n_mels, t)).astype(np.float16)
            out.append(CachedExample(f"clip{i}", v, "test" if i == 0 else "train", feats, -0.5 - i / 10,
                                     labels, f"text {i}"))
    return out


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
    index = json.loads((a / "index.json").read_text())   # someone "fixed" the checksum by hand
    index["shards"][ours.name].update(json.loads((b / "index.json").read_text())["shards"][theirs.name])
    (a / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheError, match="foreign or stale"):
        FeatureCache(a).get("clip1", 1)


def test_not_an_index(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "index.json").write_text('{"hello": 1}')
    with pytest.raises(CacheError, match="not a whisper-tune cache index"):
        open_cache(tmp_path)


def test_alias_variant_reads_as_the_clean_one(tmp_path):
    """A variant stored as an alias (no augmentation fired) returns variant 0's features under its own number."""
    from pipeline.cache import FEATURE_KIND, FeatureRow, LabelRow, write_shard

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    feats = np.ones((80, 10), np.float16)
    fs = write_shard(cache_dir, "t", FEATURE_KIND, [FeatureRow("c", 0, "f0", feats, -0.3),
                                                     FeatureRow("c", 1, "f1", None, 0.0, alias_of=0)])
    ls = write_shard(cache_dir, "t", LABEL_KIND, [LabelRow("c", np.array([1, 2], np.int32), "x", "l")])
    index = CacheIndex(meta={"n_mels": 80, "variants": 2, "model": "m", "tokenizer_fingerprint": "t"},
                       shards={fs.name: fs, ls.name: ls},
                       clips={"c": {"split": "train", "labels": {"shard": ls.name, "row": 0, "fp": "l"},
                                    "variants": {"0": {"shard": fs.name, "row": 0, "fp": "f0"},
                                                 "1": {"shard": fs.name, "row": 1, "fp": "f1", "alias": 0}}}})
    index.save(cache_dir / "index.json")
    cache = open_cache(tmp_path)
    assert cache.variants("c") == [0, 1]
    one = cache.get("c", 1)
    assert one.variant == 1 and np.array_equal(one.features, feats) and one.floor == pytest.approx(-0.3)


def test_lock_names_its_holder_and_is_released(tmp_path):
    with CacheLock(tmp_path):
        with pytest.raises(CacheError, match=rf"pid {os.getpid()} on host .* since"):
            CacheLock(tmp_path).acquire()
    with CacheLock(tmp_path):      # released: free again
        pass


def test_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("pid 999999 on host elsewhere since 2020-01-01 00:00:00 UTC\n")
    with CacheLock(tmp_path) as lock:
        assert f"pid {os.getpid()}" in lock.holder()


def test_forked_children_do_not_keep_the_lock(tmp_path):
    import signal
    import time

    lock = CacheLock(tmp_path).acquire()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child (fork handlers have run): says so, then sleeps holding whatever it inherited
        os.write(ready_w, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        from pipeline.cache import _HELD_LOCK_FDS

        _HELD_LOCK_FDS.discard(lock._fd)
        os.close(lock._fd)          # the run "dies" without unlocking: only its own descriptor goes away
        lock._fd = None
        with CacheLock(tmp_path):   # free, because the forked child closed its inherited copy
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


def test_part_runs_share_the_cache_but_exclude_a_whole_run(tmp_path):
    one = [lock.acquire() for lock in CacheLock.for_run(tmp_path, (1, 2))]
    two = [lock.acquire() for lock in CacheLock.for_run(tmp_path, (2, 2))]     # parts side by side
    with pytest.raises(CacheError, match=r"part-1-of-2"):
        CacheLock.for_run(tmp_path, (1, 2))[1].acquire()                        # the same part twice
    with pytest.raises(CacheError, match=rf"pid {os.getpid()} .*part-1-of-2.*part-2-of-2"):
        CacheLock.for_run(tmp_path, None)[0].acquire()                          # a whole run meanwhile
    for lock in reversed(one + two):
        lock.release()
    whole = CacheLock.for_run(tmp_path, None)[0].acquire()
    with pytest.raises(CacheError, match=rf"pid {os.getpid()} on host"):
        CacheLock.for_run(tmp_path, (1, 2))[0].acquire()                        # a part while a whole run writes
    whole.release()
