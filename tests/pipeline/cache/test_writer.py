"""The cache writer: the one owner of changes to the cache folder. It cleans up only what it owns, only files
of its own name patterns, adopts orphan shards, and drops damaged ones."""

from __future__ import annotations

import numpy as np

from whisper_tune.testing import flip_bytes, synthetic
from whisper_tune.pipeline.cache import (CacheIndex, CacheWriter, ClipEntry, IndexMeta, LabelRow, is_shard_name,
                                         load_merged_index, open_cache, write_examples)
from whisper_tune.pipeline.cache.segments import segment_files

OTHER = "p1of2-lab-0123456789abcdef0123.arrow"


def test_tmp_files_of_killed_runs_are_removed_by_their_owner_only(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    names = [".p1of2-feat-0123456789abcdef0123.arrow.99.tmp", ".p2of2-feat-0123456789abcdef0123.arrow.99.tmp",
             ".index.part-2-of-2.json.7.tmp", "keep.tmp", "notes.txt"]
    for name in names:
        (cache / name).write_text("x")
    with CacheWriter(cache, part=(2, 2)).locked():
        pass
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock")) == sorted(
        [names[0], "keep.tmp", "notes.txt"])
    with CacheWriter(cache).locked():
        pass
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock")) == ["keep.tmp", "notes.txt"]


def test_finish_keeps_complete_clips_and_removes_only_unreferenced_shards_of_its_own(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic())
    (cache / "notes.txt").write_text("mine")
    (cache / "all-feat-bad.arrow").write_text("not a shard name")
    writer = CacheWriter(cache, part=(1, 2))
    with writer.locked():
        previous, note = writer.read_previous()
        assert note == "" and len(previous.clips) == 3
        writer.start(IndexMeta(n_mels=80, variants=2), previous.shards, {"half": ClipEntry(split="train")}, {})
        writer.add_label_rows([LabelRow("half", np.array([1], np.int32), "x", "l")], 1 << 20)
        final = writer.finish()
    assert final.clips == {} and final.shards == {}                   # "half" has no variant 0: not readable
    assert (cache / "notes.txt").exists() and (cache / "all-feat-bad.arrow").exists()
    assert not list(cache.glob("p1of2-*.arrow"))                      # its own unreferenced label shard went
    assert len(open_cache(tmp_path)) == 3                             # the whole run's shards are not a part's


def test_damaged_shards_are_dropped_and_orphans_offered(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic())
    index = load_merged_index(cache)
    damaged = sorted(n for n in index.shards if "-feat-" in n)[0]
    flip_bytes(cache / damaged)
    writer = CacheWriter(cache, prefix="mem")
    with writer.locked():
        good, dropped = writer.trusted_shards(index)
        assert dropped == 1 and damaged not in good and not (cache / damaged).exists()
        orphans = writer.orphan_rows(CacheIndex())                    # as if no index listed them
    assert {ref.shard for ref, _ in orphans.values()} == set(good)
    assert ("clip1", None) in orphans and ("clip1", 0) not in orphans    # labels survive, features do not


def test_write_examples_replaces_what_was_there(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic(seed=1))
    (cache / "index.part-1-of-2.json").write_text("{}")
    write_examples(cache, synthetic(seed=2))
    listed = load_merged_index(cache).referenced_shards()
    assert {p.name for p in cache.glob("*.arrow") if is_shard_name(p.name)} == listed
    assert not list(cache.glob("index.part-*")) and len(segment_files(cache)) == 1


def test_a_shard_a_worker_wrote_out_of_sight_is_refused(tmp_path):
    """Workers write their shards themselves; one the writer's machine cannot see (WORK not shared) is refused."""
    import pytest

    from whisper_tune.pipeline.cache import CacheError, FeatureRow
    from whisper_tune.pipeline.cache.writer import write_feature_shards

    rows = [FeatureRow("c", 0, "fp", np.zeros((80, 5), np.float16), -0.5)]
    elsewhere = tmp_path / "worker" / "cache"
    elsewhere.mkdir(parents=True)
    [shard] = write_feature_shards(elsewhere, "all", rows, 1 << 20)
    writer = CacheWriter(tmp_path / "cache")
    with writer.locked():
        writer.start(IndexMeta(), {}, {"c": ClipEntry(split="train")}, {})
        with pytest.raises(CacheError, match=rf"^a worker wrote shard {shard.info.name}, but .*cache on this "
                                             r"machine lacks it: every worker must write into the same shared WORK"):
            writer.record_features(shard)
        write_feature_shards(tmp_path / "cache", "all", rows, 1 << 20)     # the same task, where it belongs
        writer.record_features(shard)
    assert writer.clips["c"].variants[0].shard == shard.info.name
