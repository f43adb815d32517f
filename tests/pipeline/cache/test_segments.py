"""The index as append-only segments: a run appends what it changed, readers merge the segments without building
an object per clip, and the merged view equals the Python merge the writer uses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from whisper_tune.testing import rewrite_segment, synthetic
from whisper_tune.pipeline.cache import (CacheError, CacheWriter, ClipEntry, FeatureCache, IndexMeta, LabelRow, RowRef,
                                         ShardInfo, SkipEntry, load_merged_index, write_examples)
from whisper_tune.pipeline.cache.segments import (COMPACT_SEGMENTS, IndexDelta, IndexView, read_segments,
                                                  segment_files, segment_prefix, write_segment)

LAB = "all-lab-0123456789abcdef0123.arrow"
FEAT = "all-feat-0123456789abcdef0123.arrow"
SHARDS = {n: ShardInfo(n, k, "c", 1, 2, 10) for n, k in ((LAB, "lab"), (FEAT, "feat"))}


def _clip(split: str = "train", text: str = "t", row: int = 0) -> ClipEntry:
    return ClipEntry(split=split, text=text, labels=RowRef(LAB, row, f"l{row}"),
                     variants={0: RowRef(FEAT, row, f"f{row}"), 1: RowRef(FEAT, row + 1, "a", alias=0)})


def _view(cache) -> IndexView:
    return IndexView(read_segments(cache), cache)


def test_later_segments_replace_remove_and_skip_and_the_view_equals_the_python_merge(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    meta = IndexMeta(n_mels=80, variants=2)
    ids = ["b", "a", "é", "Z", "c"]                      # not in order, one not ASCII
    write_segment(cache, "all", IndexDelta(meta=meta, shards=dict(SHARDS),
                                           clips={c: _clip(text=c, row=i) for i, c in enumerate(ids)}))
    write_segment(cache, "p1of2", IndexDelta(meta=meta, clips={"a": _clip("test", "new a", 7)},
                                             removed_clips={"b"},
                                             skipped={"c": SkipEntry(reason="silent", fp="s", split="train")}))
    write_segment(cache, "p2of2", IndexDelta(meta=meta, clips={"d": ClipEntry(split="train")}))   # not readable
    merged = load_merged_index(cache)
    assert sorted(merged.clips) == ["Z", "a", "d", "é"] and set(merged.skipped) == {"c"}
    assert merged.clips["a"] == _clip("test", "new a", 7) and merged.clips["é"] == _clip(text="é", row=2)
    view = _view(cache)
    readable = sorted(c for c, e in merged.clips.items() if e.complete)
    assert view.clip_ids() == readable == ["Z", "a", "é"]   # code point order = UTF-8 byte order
    assert view.clip_ids("train") == ["Z", "é"] and view.clip_ids("test") == ["a"] and view.clip_ids("dev") == []
    for cid in readable:
        assert view.entry(cid) == merged.clips[cid]
    assert view.entry("b") is None and view.entry("c") is None and view.entry("zz") is None
    assert set(view.skipped) == {"c"} and view.referenced == {LAB, FEAT}


def test_a_run_appends_only_what_it_changed(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic(n_clips=6))
    [first] = segment_files(cache)
    before = first.read_bytes()
    writer = CacheWriter(cache, prefix="mem")     # the writer of that segment (another whole run compacts it)
    with writer.locked():
        previous, _ = writer.read_previous()
        writer.start(previous.meta, previous.shards, previous.clips, previous.skipped)
        assert segment_files(cache) == [first]                 # nothing changed: nothing written
        writer.clips["clip3"] = replace(writer.clips["clip3"], text="corrected")
        writer.save(force=True)
        [_, appended] = segment_files(cache)
        [segment] = read_segments(cache)[1:]
        assert segment.table.num_rows == 1 and segment.table.column("clip_id").to_pylist() == ["clip3"]
        assert not segment.shards and not segment.dropped_shards   # the shard list is not repeated
        writer.finish()
    assert first.read_bytes() == before                          # never rewritten
    assert FeatureCache(cache).transcript("clip3") == "corrected"
    assert segment_files(cache) == [first, appended]             # a second segment is no reason to compact


def test_a_part_run_removes_nothing_of_the_other_parts(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic(n_clips=4))
    whole = load_merged_index(cache)
    writer = CacheWriter(cache, part=(1, 2))
    with writer.locked():
        previous, _ = writer.read_previous()
        writer.start(previous.meta, {}, {"new": ClipEntry(split="train")}, {})   # knows only its own clip
        writer.add_label_rows([LabelRow("new", np.array([1], np.int32), "x", "l")], 1 << 20)
        writer.finish()
    [part] = [s for s in read_segments(cache) if segment_prefix(s.path.name) == "p1of2"]
    assert not part.dropped_shards and not part.unskipped and not part.removed_recordings
    live = np.asarray(part.table.column("live"))
    assert set(np.asarray(part.table.column("clip_id"))[~live]) <= {"new"}   # no tombstone for the others' clips
    assert load_merged_index(cache).clips == whole.clips       # "new" had no features: not kept
    assert len(FeatureCache(cache)) == 4


def test_many_segments_are_compacted_by_a_whole_run(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic(n_clips=4))
    for i in range(COMPACT_SEGMENTS + 1):
        writer = CacheWriter(cache)
        with writer.locked():
            previous, _ = writer.read_previous()
            writer.start(previous.meta, previous.shards, previous.clips, previous.skipped)
            writer.clips["clip1"] = replace(writer.clips["clip1"], text=f"edit {i}")
            final = writer.finish()
    assert len(segment_files(cache)) == 1
    assert load_merged_index(cache).clips == final.clips and FeatureCache(cache).transcript("clip1") == f"edit {i}"


def test_a_segment_whose_rows_are_out_of_order_or_unlisted_is_refused(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic(n_clips=3))
    [seg] = segment_files(cache)
    rewrite_segment(seg, table=lambda t: t.take([1, 0, 2]))
    with pytest.raises(CacheError, match=r"index\.[0-9]{20}\.mem\.arrow is not a usable feature cache index segment "
                                         r"\(the clip ids are not in order, each once\); re-run `whisper-tune features"):
        FeatureCache(cache)
    write_examples(cache, synthetic(n_clips=3))
    [seg] = segment_files(cache)
    rewrite_segment(seg, doc=lambda d: d.update(shards={}))      # rows refer to shards no segment lists
    with pytest.raises(CacheError, match=r"refers clips to shard .*, which it does not list; re-run"):
        FeatureCache(cache)
    with pytest.raises(CacheError, match=r"refers clip 'clip0' to shard .*, which it does not list; re-run"):
        load_merged_index(cache)
