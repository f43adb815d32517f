"""The index: typed dataclasses that round-trip through JSON, loaded by one function that refuses every defect
in one line naming the file and the command that rebuilds it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from whisper_tune.testing import synthetic
from whisper_tune.pipeline.cache import (INDEX_VERSION, CacheIndex, ClipEntry, IndexMeta, RowRef, ShardInfo, SkipEntry,
                            SourceRecord, load_index, load_merged_index, save_index, write_examples)
from whisper_tune.pipeline.core.errors import CacheError

FEAT = "all-feat-0123456789abcdef0123.arrow"
LAB = "all-lab-0123456789abcdef0123.arrow"


def _index() -> CacheIndex:
    shards = {FEAT: ShardInfo(FEAT, "feat", "ab", 10, 11, 2, 12, 13), LAB: ShardInfo(LAB, "lab", "cd", 20, 21, 1)}
    clip = ClipEntry(split="train", text="Hi", source=SourceRecord("/a.wav", 5, 6, "h"), labels=RowRef(LAB, 0, "l"),
                     variants={0: RowRef(FEAT, 0, "f0"), 1: RowRef(FEAT, 1, "f1", alias=0)})
    return CacheIndex(meta=IndexMeta(n_mels=80, variants=2, model="m", part="1/2"), shards=shards,
                      clips={"c": clip}, skipped={"d": SkipEntry("silent", "s", None)})


def test_round_trip(tmp_path):
    save_index(tmp_path / "index.json", _index())
    data = json.loads((tmp_path / "index.json").read_text())
    assert data["format"] == "whisper-tune-cache" and data["version"] == INDEX_VERSION
    assert load_index(tmp_path / "index.json") == _index()
    assert _index().referenced_shards() == {FEAT, LAB} and _index().clips["c"].complete


def test_the_audit_mark_round_trips_and_is_written_only_when_set(tmp_path):
    index = _index()
    marked = replace(index, clips={"c": replace(index.clips["c"], audit_ok=True)})
    save_index(tmp_path / "index.json", marked)
    assert json.loads((tmp_path / "index.json").read_text())["clips"]["c"]["audit_ok"] is True
    assert load_index(tmp_path / "index.json") == marked
    assert "audit_ok" not in index.to_json()["clips"]["c"]
    assert 'audit_ok must be true or false, got "ok"' in _broken(tmp_path, lambda d: d["clips"]["c"].update(audit_ok="ok"))


def _broken(tmp_path, change) -> str:
    data = _index().to_json()
    change(data)
    (tmp_path / "index.json").write_text(json.dumps(data))
    with pytest.raises(CacheError) as err:
        load_index(tmp_path / "index.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'index.json'} is not a usable feature cache index (")
    assert message.endswith(f"re-run `whisper-tune features --work {tmp_path.parent}` to rebuild it")
    return message


@pytest.mark.parametrize("change, what", [
    (lambda d: d["clips"]["c"]["variants"]["0"].update(shard="../../victim.txt"),
     'clips["c"].variants[0].shard "../../victim.txt" is not a plain cache shard file name'),
    (lambda d: d["clips"]["c"]["labels"].update(shard="all-lab-ffffffffffffffffffff.arrow"),
     'clips["c"].labels.shard all-lab-ffffffffffffffffffff.arrow is not in the shard list'),
    (lambda d: d["shards"][FEAT].update(kind="lab"), 'shards["all-feat-0123456789abcdef0123.arrow"].kind is "lab"'),
    (lambda d: d["shards"][FEAT].update(size=-1), "size must be >= 0, got -1"),
    (lambda d: d["shards"][FEAT].update(rows=True), "rows must be a whole number, got true"),
    (lambda d: d["meta"].pop("n_mels"), "meta lacks 'n_mels'"),
    (lambda d: d["clips"]["c"]["variants"].update(x={}), 'variants has key "x", expected a variant number'),
    (lambda d: d["clips"].update(c=[]), 'clips["c"] must be an object, got []'),
    (lambda d: d.update(format="whisper-tune-cache-v1"), "not a whisper-tune cache index"),
    (lambda d: d.pop("version"), "index version null, this whisper-tune reads version 2"),
])
def test_defects_are_one_line(tmp_path, change, what):
    assert what in _broken(tmp_path, change)


def test_part_indexes_merge_and_must_agree(tmp_path):
    cache = tmp_path / "cache"
    write_examples(cache, synthetic())
    assert load_merged_index(cache).clips.keys() == {"clip0", "clip1", "clip2"}
    other = load_merged_index(cache)
    from dataclasses import replace

    from whisper_tune.pipeline.cache.segments import IndexDelta, write_segment

    write_segment(cache, "p1of2", IndexDelta(meta=replace(other.meta, n_mels=128)))
    with pytest.raises(CacheError, match=r"index\.[0-9]{20}\.p1of2\.arrow was built with different settings "
                                         r"\(n_mels\)"):
        load_merged_index(cache)


REC = "all-rec-0123456789abcdef0123.arrow"


def test_test_recordings_are_an_optional_record_that_round_trips(tmp_path):
    from whisper_tune.pipeline.cache import RecordingEntry, ReferenceCue

    index = _index()
    save_index(tmp_path / "index.json", index)
    assert "recordings" not in json.loads((tmp_path / "index.json").read_text())   # older readers' shape kept
    entry = RecordingEntry(split="test", seconds=61.5, source=SourceRecord("/r.flac", 7, 8, "rh"),
                           features=RowRef(REC, 0, "r"), cues=(ReferenceCue(0.5, 2.25, "Hello."),
                                                               ReferenceCue(3.0, 4.0, "again")))
    with_rec = replace(index, shards={**index.shards, REC: ShardInfo(REC, "rec", "ef", 30, 31, 1)},
                       recordings={"talks/a.flac": entry})
    save_index(tmp_path / "index.json", with_rec)
    assert load_index(tmp_path / "index.json") == with_rec and REC in with_rec.referenced_shards()
    data = json.loads((tmp_path / "index.json").read_text())
    data["recordings"]["talks/a.flac"]["cues"][1] = [3.0, "4.0", "again"]
    (tmp_path / "index.json").write_text(json.dumps(data))
    with pytest.raises(CacheError, match=r"recordings\[\"talks/a.flac\"\].cues\[1\] must be a number of seconds"):
        load_index(tmp_path / "index.json")
