"""The feature cache: Arrow shards + an index of Arrow segments under WORK/cache/ (the contract between `features`
and `train`).

    shard.py     the shard file format (clip features, labels, whole test recordings), name pattern, checksums
    index.py     the index as typed dataclasses; the JSON index of caches written before segments
    segments.py  the index as append-only Arrow segments: written per save, merged by readers, compacted
    lock.py    the lock a writing run holds
    reader.py  FeatureCache / open_cache: memory-mapped, checksum-verified reads
    writer.py  CacheWriter: every change to the cache (add, adopt, prune, clean up); write_examples

Every row carries the fingerprint of what produced it; the index records the same fingerprint per clip-variant,
so a shard from another cache (or a stale one) is refused, never silently used. A variant in which no
augmentation fired equals the clean clip: it is stored as an alias row and read as variant 0's features.
This package needs no audio libraries: the training machine uses it.
"""

from whisper_tune.pipeline.cache.index import (INDEX_NAME, INDEX_VERSION, PART_INDEX_GLOB, CacheIndex, ClipEntry, IndexMeta,
                    RecordingEntry, ReferenceCue, RowRef, SkipEntry, SourceRecord, load_index, part_index_name, save_index)
from whisper_tune.pipeline.cache.segments import index_metas, load_merged_index
from whisper_tune.pipeline.cache.lock import LOCK_NAME, CacheLock
from whisper_tune.pipeline.cache.reader import (CACHE_DIRNAME, VERIFY_MARKER, CachedExample, CachedRecording, FeatureCache,
                                                ShardRows, open_cache)
from whisper_tune.pipeline.cache.shard import (FEATURE_KIND, LABEL_KIND, RECORDING_KIND, SHARD_SUFFIX, FeatureRow, LabelRow,
                    RecordingRow, ShardInfo, file_checksum,
                    is_shard_name, rebuild_hint, shard_path, split_rows, write_shard)
from whisper_tune.pipeline.cache.writer import CacheWriter, shard_prefix, write_examples
from whisper_tune.pipeline.core.errors import CacheError

__all__ = [
    "CACHE_DIRNAME", "INDEX_NAME", "INDEX_VERSION", "PART_INDEX_GLOB", "LOCK_NAME", "SHARD_SUFFIX", "VERIFY_MARKER",
    "FEATURE_KIND", "LABEL_KIND", "RECORDING_KIND", "CacheError", "CacheIndex", "CacheLock", "CacheWriter",
    "CachedExample", "CachedRecording", "ClipEntry", "FeatureCache", "FeatureRow", "IndexMeta", "LabelRow",
    "RecordingEntry", "RecordingRow", "ReferenceCue", "RowRef", "ShardInfo",
    "ShardRows", "SkipEntry", "SourceRecord", "file_checksum", "index_metas", "is_shard_name", "load_index", "load_merged_index",
    "open_cache", "part_index_name", "rebuild_hint", "save_index", "shard_path", "shard_prefix", "split_rows",
    "write_examples", "write_shard",
]
