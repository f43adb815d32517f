"""Shard format: names follow one pattern and only such names become paths; shards are atomic and checksummed."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_tune.pipeline.cache import FEATURE_KIND, LABEL_KIND, FeatureRow, LabelRow, is_shard_name, shard_path, write_shard
from whisper_tune.pipeline.cache.shard import file_checksum, read_shard_table, shard_name, split_rows
from whisper_tune.pipeline.core.errors import CacheError


@pytest.mark.parametrize("name", ["../../victim.txt", "/etc/passwd", "all-feat-0123456789abcdef0123.arrow/x",
                                  "../all-feat-0123456789abcdef0123.arrow", "all-feat-0123.arrow", "",
                                  "all-xyz-0123456789abcdef0123.arrow", ".all-feat-0123456789abcdef0123.arrow", 7])
def test_only_the_writers_own_names_are_shard_names(tmp_path, name):
    assert not is_shard_name(name)
    with pytest.raises(CacheError, match="is not a cache shard name"):
        shard_path(tmp_path, name)


def test_written_shards_are_named_checksummed_and_readable(tmp_path):
    rows = [FeatureRow("c", 0, "f0", np.ones((80, 7), np.float16), -0.5), FeatureRow("c", 1, "f1", None, alias_of=0)]
    info = write_shard(tmp_path, "p2of3", FEATURE_KIND, rows)
    assert is_shard_name(info.name) and info.name == shard_name("p2of3", FEATURE_KIND, rows)
    path = tmp_path / info.name
    assert info.checksum == file_checksum(path) and info.stat_matches(path.stat()) and info.rows == 2
    assert read_shard_table(path).column("alias_of").to_pylist() == [-1, 0]
    assert [p.name for p in tmp_path.iterdir()] == [info.name]          # no temporary file left
    labels = write_shard(tmp_path, "p2of3", LABEL_KIND, [LabelRow("c", np.array([1, 2], np.int32), "x", "l")])
    assert labels.kind == LABEL_KIND and "-lab-" in labels.name


def test_a_rewrite_with_the_old_mtime_no_longer_matches_its_stat(tmp_path):
    import os

    info = write_shard(tmp_path, "all", LABEL_KIND, [LabelRow("c", np.array([1], np.int32), "x", "l")])
    path = tmp_path / info.name
    st = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == info.mtime_ns and not info.stat_matches(path.stat())


def test_bad_prefixes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        write_shard(tmp_path, "../x", LABEL_KIND, [LabelRow("c", np.array([1], np.int32), "x", "l")])


def test_split_rows_bounds_groups():
    rows = [FeatureRow(f"c{i}", 0, "f", np.ones((10, 10), np.float16)) for i in range(5)]   # 200 bytes each
    assert [len(g) for g in split_rows(rows, 450)] == [2, 2, 1]
    assert [len(g) for g in split_rows(rows, 1)] == [1] * 5
