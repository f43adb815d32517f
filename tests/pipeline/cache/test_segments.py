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


def _run(cache, part=None, keep=None, add=(), owns=None, recordings=None):
    """A run as the features stage makes one: keeps the previous clips named in keep (None: all), adds clips."""
    from whisper_tune.pipeline.cache import FeatureRow

    writer = CacheWriter(cache, part=part)
    with writer.locked():
        previous, _ = writer.read_previous()
        shards, _ = writer.trusted_shards(previous)
        clips = {c: e for c, e in previous.clips.items() if keep is None or c in keep}
        writer.start(IndexMeta(n_mels=4, variants=1, part="" if part is None else f"{part[0]}/{part[1]}"), shards,
                     clips, dict(previous.skipped), owns=owns)
        for cid in add:
            writer.clips[cid] = ClipEntry(split="train", text=cid)
            writer.add_label_rows([LabelRow(cid, np.array([1, 2], np.int32), cid, "l" + cid)], 1 << 20)
            writer.add_feature_rows([FeatureRow(cid, 0, "f" + cid, np.zeros((4, 5), np.float16), -0.5)], 1 << 20)
        for rid in recordings or ():
            _add_recording(writer, rid)
        return writer.finish()


def _add_recording(writer, rid):
    from whisper_tune.pipeline.cache import RecordingEntry, RecordingRow

    writer.add_recording(RecordingRow(rid, "r" + rid, np.zeros((4, 50), np.float16), -0.5),
                         RecordingEntry(split="test", seconds=0.5))


def test_a_part_removes_its_own_gone_clips_and_recordings_and_never_leaves_a_dangling_shard(tmp_path):
    cache = tmp_path / "cache"
    _run(cache, add=["other"])                                            # another part's (or a whole run's) clip
    _run(cache, part=(1, 2), add=["a"], owns=lambda c: c != "other", recordings=["rec"])
    _run(cache, part=(1, 2), add=["b"], owns=lambda c: c != "other", recordings=["rec"])
    assert FeatureCache(cache).clip_ids() == ["a", "b", "other"]
    _run(cache, part=(1, 2), keep={"a", "other"}, owns=lambda c: c != "other")   # b and rec left the manifest
    merged = load_merged_index(cache)
    assert sorted(merged.clips) == ["a", "other"] and merged.recordings == {}
    cache_now = FeatureCache(cache)
    assert cache_now.clip_ids() == ["a", "other"] and cache_now.recording_ids() == []
    _run(cache, part=(1, 2), keep={"other"})          # a run that cannot tell whose clips are whose removes none
    assert FeatureCache(cache).clip_ids() == ["a", "other"]


def test_the_first_save_keeps_the_recordings_a_run_lists_later(tmp_path):
    cache = tmp_path / "cache"
    _run(cache, add=["a"], recordings=["rec"])
    writer = CacheWriter(cache)
    with writer.locked():
        previous, _ = writer.read_previous()
        writer.start(previous.meta, previous.shards, dict(previous.clips), {})    # recordings are listed after this
        assert FeatureCache(cache).recording_ids() == ["rec"]                # a reader (or a kill) now loses none
        writer.recordings.update(previous.recordings)
        writer.finish()
    assert FeatureCache(cache).recording_ids() == ["rec"]


def test_segments_apply_in_the_order_written_whatever_the_clock_says(tmp_path, monkeypatch):
    import time

    from whisper_tune.pipeline.cache import segments

    cache = tmp_path / "cache"
    real = time.time_ns
    monkeypatch.setattr(segments.time, "time_ns", lambda: real() + 3600 * 10**9)   # a host an hour ahead
    _run(cache, add=["a", "b"])
    monkeypatch.setattr(segments.time, "time_ns", real)
    monkeypatch.setattr(segments, "_last_stamp", 0)                               # another process
    _run(cache, keep={"a"})
    assert load_merged_index(cache).clips.keys() == {"a"} and FeatureCache(cache).clip_ids() == ["a"]


def test_parts_converting_an_old_json_index_at_once_agree(tmp_path):
    from whisper_tune.pipeline.cache import save_index

    cache = tmp_path / "cache"
    _run(cache, add=["a", "b"])
    save_index(cache / "index.json", load_merged_index(cache))
    for seg in segment_files(cache):
        seg.unlink()
    slow = CacheWriter(cache, part=(2, 2))
    with slow.locked():
        slow.read_previous()                                           # part 2 read the JSON index ...
        _run(cache, part=(1, 2), keep=set(), owns=lambda c: c == "a")  # ... part 1 converts it and drops a
        previous = slow._previous
        slow.start(previous.meta, previous.shards, {"b": previous.clips["b"]}, {}, owns=lambda c: c == "b")
        slow.finish()
    assert load_merged_index(cache).clips.keys() == {"b"} and FeatureCache(cache).clip_ids() == ["b"]
    assert (cache / "index.json").exists()                            # a part leaves it; segments win


def test_a_part_that_runs_often_keeps_few_segments(tmp_path):
    cache = tmp_path / "cache"
    for i in range(COMPACT_SEGMENTS + 3):
        _run(cache, part=(1, 2), add=[f"c{i}"], owns=lambda c: True)
        _run(cache, part=(1, 2), owns=lambda c: True)                 # a run with nothing to do appends nothing
    own = [p for p in segment_files(cache) if segment_prefix(p.name) == "p1of2"]
    assert len(own) <= COMPACT_SEGMENTS
    assert FeatureCache(cache).clip_ids() == sorted(f"c{i}" for i in range(COMPACT_SEGMENTS + 3))


@pytest.mark.parametrize("column", ["var_row", "var_shard", "var_alias"])
def test_a_missing_value_inside_a_list_column_is_one_line(tmp_path, column):
    import pyarrow as pa

    cache = tmp_path / "cache"
    write_examples(cache, synthetic(n_clips=2))
    [seg] = segment_files(cache)

    def blank(t):
        i = t.schema.get_field_index(column)
        values = t.column(column).to_pylist()
        values[0] = [None] + values[0][1:]
        return t.set_column(i, column, pa.array(values, t.schema.field(column).type))

    rewrite_segment(seg, table=blank)
    for read in (FeatureCache, load_merged_index):
        with pytest.raises(CacheError, match=rf"not a usable feature cache index segment \(column {column} has "
                                             r"missing values\)"):
            read(cache)


def test_a_folder_named_like_a_segment_is_no_segment(tmp_path):
    cache = tmp_path / "cache"
    _run(cache, add=["a"])
    (cache / f"index.{'9' * 20}.all.arrow").mkdir()
    _run(cache, add=["b"])
    assert FeatureCache(cache).clip_ids() == ["a", "b"] and (cache / f"index.{'9' * 20}.all.arrow").is_dir()


def test_a_skip_ends_with_a_later_row_in_the_view_as_in_the_merge(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    meta = IndexMeta(n_mels=80, variants=2)
    write_segment(cache, "all", IndexDelta(meta=meta, shards=dict(SHARDS), clips={"a": _clip()},
                                           skipped={"s": SkipEntry(reason="silent", fp="x")}))
    write_segment(cache, "all", IndexDelta(meta=meta, clips={"s": ClipEntry(split="train")}))   # retried, unfinished
    assert load_merged_index(cache).skipped == {} and _view(cache).skipped == {}

