"""The cache index as append-only Arrow segments: what a run adds is appended, never the whole index rewritten.

    WORK/cache/index.<stamp>.<prefix>.arrow    one segment: a run's (or a part's) changes since its last save

A segment is one Arrow IPC file (written atomically): a table with one row per clip it adds or changes (or a
tombstone row, `live` false, for a clip it removes), and in the schema's metadata a small JSON document with what
is not per clip: the run's meta, the shards it adds or drops, the skips and recordings it adds or removes, and
`shard_names`, the shard names its rows refer to by number. Readers apply the segments in name order (the stamp
is the time of writing, in nanoseconds): a later row for a clip replaces every earlier one.

Two readers of the same files:

    load_segments_index(cache_dir)  the merged index as Python objects (CacheIndex): the `features` run
    IndexView(segments)             the merged index as Arrow and NumPy columns, nothing built per clip: every
                                    reader of the cache (train, evaluate), so that a process holding a cache of
                                    a million clips holds tens of MB, and DataLoader workers share its pages

Every segment is checked as the JSON index always was (types, shard names of the writer's own pattern, references
to shards the index lists); any defect is one CacheError naming the file and the command that rebuilds it. A
whole `features` run compacts the segments into one now and then (COMPACT_SEGMENTS), so reads stay fast.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from whisper_tune.pipeline.core.errors import CacheError, first_line
from whisper_tune.pipeline.core.fileio import atomic_path
from whisper_tune.pipeline.cache.index import (CLIP_FLAGS, META_MUST_AGREE, CacheIndex, ClipEntry, IndexMeta,
                                               RecordingEntry, RowRef, SkipEntry, SourceRecord, _Bad, _meta, _plain,
                                               _recording, _recording_json, _shard_info, _skip, legacy_index_metas,
                                               load_legacy_index, quote)
from whisper_tune.pipeline.cache.shard import ShardInfo, is_shard_name, rebuild_hint

SEGMENT_FORMAT = "whisper-tune-cache-segment"
SEGMENT_VERSION = 3
SEGMENT_RE = re.compile(r"^index\.(?P<stamp>[0-9]{20})\.(?P<prefix>[a-z0-9]{1,24})\.arrow$")
SEGMENT_GLOB = "index.*.arrow"
META_KEY = b"whisper-tune-index"
COMPACT_SEGMENTS = 8          # a whole run with more segments than this writes one and removes the rest
FLAG_BITS = {flag: 1 << i for i, flag in enumerate(CLIP_FLAGS)}

CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("live", pa.bool_()), ("split", pa.string()), ("text", pa.string()),
    ("src_path", pa.string()), ("src_size", pa.int64()), ("src_mtime_ns", pa.int64()), ("src_hash", pa.string()),
    ("lab_shard", pa.int32()), ("lab_row", pa.int64()), ("lab_fp", pa.string()),
    ("var_variant", pa.list_(pa.int32())), ("var_shard", pa.list_(pa.int32())), ("var_row", pa.list_(pa.int64())),
    ("var_fp", pa.list_(pa.string())), ("var_alias", pa.list_(pa.int32())), ("flags", pa.uint8()),
])
VAR_COLUMNS = ("var_variant", "var_shard", "var_row", "var_fp", "var_alias")
NOT_NULL = ("clip_id", "live", "split", "text", "src_size", "src_mtime_ns", "lab_shard", "lab_row", "flags",
            *VAR_COLUMNS)


def is_segment_name(name: object) -> bool:
    return isinstance(name, str) and SEGMENT_RE.fullmatch(name) is not None


def segment_files(cache_dir: Path) -> list[Path]:
    """The segments of a cache folder in the order they apply (oldest first): regular files of the segment name
    pattern (a folder or a link of that name is not a segment: never read, never deleted)."""
    paths = [p for p in Path(cache_dir).glob(SEGMENT_GLOB)
             if is_segment_name(p.name) and not p.is_symlink() and p.is_file()]
    return sorted(paths, key=lambda p: (p.name.split(".")[1], p.name))


def segment_prefix(name: str) -> str:
    return SEGMENT_RE.fullmatch(name)["prefix"]  # type: ignore[index]


# --------------------------------------------------------------------------------------------------------------
# What one segment says


@dataclass
class IndexDelta:
    """A run's changes to the index: what one segment holds."""

    meta: IndexMeta = field(default_factory=IndexMeta)
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    dropped_shards: set[str] = field(default_factory=set)
    clips: dict[str, ClipEntry] = field(default_factory=dict)
    removed_clips: set[str] = field(default_factory=set)
    skipped: dict[str, SkipEntry] = field(default_factory=dict)
    unskipped: set[str] = field(default_factory=set)
    recordings: dict[str, RecordingEntry] = field(default_factory=dict)
    removed_recordings: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.shards or self.dropped_shards or self.clips or self.removed_clips or self.skipped
                    or self.unskipped or self.recordings or self.removed_recordings)

    @staticmethod
    def whole(index: CacheIndex) -> "IndexDelta":
        return IndexDelta(meta=index.meta, shards=dict(index.shards), clips=dict(index.clips),
                          skipped=dict(index.skipped), recordings=dict(index.recordings))


def _clip_table(clips: Mapping[str, ClipEntry], removed: Iterable[str]) -> tuple[pa.Table, list[str]]:
    names: dict[str, int] = {}

    def num(shard: str) -> int:
        return names.setdefault(shard, len(names))

    cols: dict[str, list] = {name: [] for name in CLIP_SCHEMA.names}
    gone = set(removed) - set(clips)
    for cid in sorted([*clips, *gone]):
        if cid in gone:
            for key, value in (("clip_id", cid), ("live", False), ("split", ""), ("text", ""), ("src_path", None),
                               ("src_size", 0), ("src_mtime_ns", 0), ("src_hash", None), ("lab_shard", -1),
                               ("lab_row", 0), ("lab_fp", None), ("var_variant", []), ("var_shard", []),
                               ("var_row", []), ("var_fp", []), ("var_alias", []), ("flags", 0)):
                cols[key].append(value)
            continue
        e = clips[cid]
        src = e.source
        lab = e.labels
        vs = sorted(e.variants.items())
        for key, value in (("clip_id", cid), ("live", True), ("split", e.split), ("text", e.text),
                           ("src_path", src.path if src else None), ("src_size", src.size if src else 0),
                           ("src_mtime_ns", src.mtime_ns if src else 0), ("src_hash", src.hash if src else None),
                           ("lab_shard", num(lab.shard) if lab else -1), ("lab_row", lab.row if lab else 0),
                           ("lab_fp", lab.fp if lab else None),
                           ("var_variant", [v for v, _ in vs]), ("var_shard", [num(r.shard) for _, r in vs]),
                           ("var_row", [r.row for _, r in vs]), ("var_fp", [r.fp for _, r in vs]),
                           ("var_alias", [-1 if r.alias is None else r.alias for _, r in vs]),
                           ("flags", sum(bit for flag, bit in FLAG_BITS.items() if getattr(e, flag)))):
            cols[key].append(value)
    return pa.table(cols, schema=CLIP_SCHEMA), list(names)


def _doc(delta: IndexDelta, shard_names: list[str]) -> dict[str, Any]:
    return {
        "format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, "meta": _plain(delta.meta),
        "shards": {n: {k: v for k, v in _plain(s).items() if k != "name"} for n, s in sorted(delta.shards.items())},
        "dropped_shards": sorted(delta.dropped_shards), "shard_names": shard_names,
        "skipped": {c: _plain(s) for c, s in sorted(delta.skipped.items())}, "unskipped": sorted(delta.unskipped),
        "recordings": {r: _recording_json(e) for r, e in sorted(delta.recordings.items())},
        "removed_recordings": sorted(delta.removed_recordings),
    }


_last_stamp = 0
FIRST_STAMP = "0" * 20        # an old JSON index converted: it applies before every segment


def _stamp(cache_dir: Path) -> str:
    """The time in nanoseconds, but always after every segment already in the folder and every stamp this
    process gave (20 digits: names sort in the order they were written, whatever a machine's clock says)."""
    global _last_stamp
    latest = max((int(p.name.split(".")[1]) for p in segment_files(cache_dir)), default=0)
    _last_stamp = max(time.time_ns(), latest + 1, _last_stamp + 1)
    return f"{_last_stamp:020d}"


def write_segment(cache_dir: Path, prefix: str, delta: IndexDelta, stamp: str | None = None) -> Path:
    """One segment with `delta`, atomically (tmp name, fsync, rename). -> its path."""
    table, names = _clip_table(delta.clips, delta.removed_clips)
    doc = json.dumps(_doc(delta, names), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    table = table.replace_schema_metadata({META_KEY: doc.encode("utf-8")})
    path = Path(cache_dir) / f"index.{stamp or _stamp(cache_dir)}.{prefix}.arrow"
    with atomic_path(path, needed_bytes=table.nbytes + len(doc)) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=max(1, table.num_rows))
    return path


# --------------------------------------------------------------------------------------------------------------
# Reading and checking one segment


def _names(d: dict, key: str, check=None) -> list[str]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{key} must be a list of names, got {quote(value)}")
    for v in value:
        if check is not None and not check(v):
            raise _Bad(f"{key} has {quote(v)}, not a plain cache shard file name")
    return value


def _one(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as one array: the segment's only chunk itself (a view of the map, no copy)."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _np(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return _one(column).to_numpy(zero_copy_only=False)


def _list(column: pa.ChunkedArray) -> pa.ListArray:
    arr = _one(column)
    return arr if arr.offset == 0 else pa.ListArray.from_arrays(arr.offsets, arr.flatten())


class Segment:
    """One segment file, memory-mapped and checked: its clip table and its small JSON part."""

    def __init__(self, path: Path, table: pa.Table, doc: dict[str, Any], shards_so_far: Mapping[str, ShardInfo],
                 numbers: bool = True):
        """numbers: also check every source record's and row number's sign (the writer does; a reader checks a
        row number where it uses it, and never reads source records, so it leaves those pages unread)."""
        self.numbers = numbers
        self.path, self.table = path, table
        self.meta = _meta(_get_map(doc, "meta"))
        self.shards = {n: _shard_info(n, d) for n, d in _get_map(doc, "shards").items()}
        self.dropped_shards = set(_names(doc, "dropped_shards", is_shard_name))
        self.shard_names = _names(doc, "shard_names", is_shard_name)
        self.skipped = {c: _skip(c, d) for c, d in _get_map(doc, "skipped").items()}
        self.unskipped = set(_names(doc, "unskipped"))
        known = {**shards_so_far, **self.shards}
        self.recordings = {r: _recording(r, d, known) for r, d in _get_map(doc, "recordings").items()}
        self.removed_recordings = set(_names(doc, "removed_recordings"))
        self._check_rows()

    def _check_rows(self) -> None:
        t = self.table
        for name in NOT_NULL:
            if t.column(name).null_count:
                raise _Bad(f"column {name} has missing values")
        ids = _one(t.column("clip_id"))
        if len(ids) > 1 and not pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py():
            raise _Bad("the clip ids are not in order, each once")
        n = len(self.shard_names)
        lab = _np(t.column("lab_shard"))
        if lab.size and (lab.min() < -1 or lab.max() >= n):
            raise _Bad(f"a clip's labels refer to shard number {int(lab.max() if lab.max() >= n else lab.min())}, "
                       f"the segment names {n}")
        lists = {c: _list(t.column(c)) for c in VAR_COLUMNS}
        offsets = _np(lists["var_variant"].offsets)
        for c in VAR_COLUMNS[1:]:
            if not np.array_equal(_np(lists[c].offsets), offsets):
                raise _Bad(f"column {c} does not have one value per variant")
        vshard = _np(lists["var_shard"].flatten())
        if vshard.size and (vshard.min() < 0 or vshard.max() >= n):
            raise _Bad(f"a variant refers to shard number {int(vshard.max())}, the segment names {n}")
        for c in VAR_COLUMNS:
            if lists[c].flatten().null_count:
                raise _Bad(f"column {c} has missing values")
        variants = _np(lists["var_variant"].flatten())
        if len(variants) > 1:        # each clip's variants in order, each once (variant 0 first when stored)
            rising = variants[1:] > variants[:-1]
            starts = offsets[1:-1]
            starts = starts[(starts > 0) & (starts < len(variants))]
            rising[starts - 1] = True
            if not rising.all():
                raise _Bad("a clip's variants are not in order, each once")
        numbers = ("src_size", "src_mtime_ns", "lab_row", "var_row") if self.numbers else ()
        negative = [c for c in (*numbers, "var_variant")
                    if len(arr := (lists[c].flatten() if c in lists else _one(t.column(c)))) and _np(arr).min() < 0]
        if negative:
            raise _Bad(f"column {negative[0]} has a negative value")
        live = _np(t.column("live")).astype(bool)
        if self.numbers and (~_np(t.column("src_path").is_null()) & _np(t.column("src_hash").is_null())).any():
            raise _Bad("a clip's source lacks its hash")
        if (live & (lab >= 0) & _np(t.column("lab_fp").is_null())).any():
            raise _Bad("a clip's labels lack their fingerprint")
        self.lists = lists

    # -- as Python objects (the writer's merge)
    def clip_entries(self) -> tuple[dict[str, ClipEntry], set[str]]:
        """-> (clips this segment adds or changes, clips it removes)."""
        t = self.table
        col = {name: t.column(name).to_pylist() for name in CLIP_SCHEMA.names if name not in VAR_COLUMNS}
        flat = {c: self.lists[c].flatten().to_pylist() for c in VAR_COLUMNS}
        offsets = self.lists["var_variant"].offsets.to_pylist()
        names = self.shard_names
        refs: dict[tuple, RowRef] = {}
        live: dict[str, ClipEntry] = {}
        removed: set[str] = set()
        sources: dict[tuple, SourceRecord] = {}
        for i, cid in enumerate(col["clip_id"]):
            if not col["live"][i]:
                removed.add(cid)
                continue
            variants = {}
            for j in range(offsets[i], offsets[i + 1]):
                alias = flat["var_alias"][j]
                key = (flat["var_shard"][j], flat["var_row"][j], flat["var_fp"][j], alias)
                ref = refs.get(key)
                if ref is None:
                    ref = refs[key] = RowRef(names[key[0]], key[1], key[2], None if alias < 0 else alias)
                variants[flat["var_variant"][j]] = ref
            source = None
            if col["src_path"][i] is not None:
                skey = (col["src_path"][i], col["src_size"][i], col["src_mtime_ns"][i], col["src_hash"][i])
                source = sources.get(skey)
                if source is None:
                    source = sources[skey] = SourceRecord(*skey)
            lab = col["lab_shard"][i]
            flags = col["flags"][i]
            live[cid] = ClipEntry(split=col["split"][i], text=col["text"][i], source=source,
                                  labels=None if lab < 0 else RowRef(names[lab], col["lab_row"][i], col["lab_fp"][i]),
                                  variants=variants, **{f: bool(flags & b) for f, b in FLAG_BITS.items()})
        return live, removed


def _get_map(doc: dict, key: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _Bad(f"{key} must be an object, got {quote(value)}")
    return value


def _open_table(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    source = pa.memory_map(str(path), "r")
    reader = ipc.open_file(source)
    table = reader.read_all()
    if not table.schema.equals(CLIP_SCHEMA, check_metadata=False):
        raise _Bad("its columns are not those of a cache index segment")
    raw = (reader.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise _Bad("not a whisper-tune cache index segment")
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != SEGMENT_FORMAT:
        raise _Bad("not a whisper-tune cache index segment")
    if doc.get("version") != SEGMENT_VERSION:
        raise _Bad(f"segment version {quote(doc.get('version'))}, this whisper-tune reads version {SEGMENT_VERSION}")
    return table, doc


def read_segments(cache_dir: Path, numbers: bool = True) -> list[Segment]:
    """Every segment of the cache, checked, oldest first (numbers: see Segment). A segment removed while we list
    (a run compacting) makes us list again."""
    cache_dir = Path(cache_dir)
    for attempt in range(5):
        out: list[Segment] = []
        shards: dict[str, ShardInfo] = {}
        try:
            for path in segment_files(cache_dir):
                try:
                    table, doc = _open_table(path)
                    seg = Segment(path, table, doc, shards, numbers)
                except FileNotFoundError:
                    raise
                except (OSError, UnicodeDecodeError, ValueError, RecursionError, pa.ArrowException, _Bad) as err:
                    raise CacheError(f"{path} is not a usable feature cache index segment ({first_line(err)}); "
                                     f"{rebuild_hint(cache_dir)}") from None
                shards.update(seg.shards)
                out.append(seg)
            return out
        except FileNotFoundError:
            time.sleep(0.05 * (attempt + 1))
    raise CacheError(f"the index segments of {cache_dir} kept changing while being read (a `features` run is "
                     f"writing); try again when it has finished")


def _agree(meta: IndexMeta, seg: Segment, cache_dir: Path) -> IndexMeta:
    for key in META_MUST_AGREE:    # an empty value is "not known yet" (a run in progress)
        ours, theirs = getattr(meta, key), getattr(seg.meta, key)
        if ours and theirs and ours != theirs:
            raise CacheError(f"{seg.path.name} was built with different settings ({key}) than the rest of "
                             f"{cache_dir}; {rebuild_hint(cache_dir)}")
    return meta.merged(seg.meta)


def _apply_small(seg: Segment, shards: dict, skipped: dict, recordings: dict) -> None:
    """A segment's shards, skips and recordings over those merged so far (merging and the view share this)."""
    shards.update(seg.shards)
    for name in seg.dropped_shards:
        shards.pop(name, None)
    for cid in seg.unskipped:
        skipped.pop(cid, None)
    skipped.update(seg.skipped)
    for rid in seg.removed_recordings:
        recordings.pop(rid, None)
    recordings.update(seg.recordings)


def _check_recordings(recordings: Mapping[str, RecordingEntry], shards: Mapping[str, ShardInfo],
                      cache_dir: Path) -> None:
    gone = sorted(r for r, e in recordings.items() if e.features is not None and e.features.shard not in shards)
    if gone:
        raise CacheError(f"the index of {cache_dir} refers recording {gone[0]!r} to shard "
                         f"{recordings[gone[0]].features.shard}, which it does not list; "  # type: ignore[union-attr]
                         f"{rebuild_hint(cache_dir)}")


def merge_segments(segments: Sequence[Segment], cache_dir: Path) -> CacheIndex:
    """The segments applied in order, as Python objects (the `features` run's view)."""
    meta, shards, clips, skipped, recordings = IndexMeta(), {}, {}, {}, {}
    for seg in segments:
        meta = _agree(meta, seg, cache_dir)
        _apply_small(seg, shards, skipped, recordings)
        live, removed = seg.clip_entries()
        for cid in [*removed, *seg.skipped]:     # a skip removes the clip
            clips.pop(cid, None)
        clips.update(live)
        for cid in live:                         # a live row ends a skip
            skipped.pop(cid, None)
    for cid, entry in clips.items():
        for ref in entry.refs():
            if ref.shard not in shards:
                raise CacheError(f"the index of {cache_dir} refers clip {cid!r} to shard {ref.shard}, which it does "
                                 f"not list; {rebuild_hint(cache_dir)}")
    _check_recordings(recordings, shards, cache_dir)
    return CacheIndex(meta=meta, shards=shards, clips=clips, skipped=skipped, recordings=recordings)


def segment_metas(cache_dir: Path) -> dict[str, IndexMeta]:
    """The settings each usable segment was built with, by file name (unusable ones left out)."""
    out = {}
    for path in segment_files(cache_dir):
        try:
            table, doc = _open_table(path)
            out[path.name] = _meta(_get_map(doc, "meta"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, pa.ArrowException, _Bad):
            continue
    return out


# --------------------------------------------------------------------------------------------------------------
# The readers' view: columns, not objects


def _rows(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """The column's values at rows (the column itself, no copy, when rows are all of them)."""
    arr = _one(column)
    return arr if len(rows) == len(arr) else arr.take(pa.array(rows))


class _SortedIds:
    """Binary search over a sorted Arrow string array without building a Python string per clip."""

    def __init__(self, ids: pa.StringArray) -> None:
        self.ids = ids
        self.offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset: ids.offset + len(ids) + 1]
        data = ids.buffers()[2]
        self.data = memoryview(data) if data is not None else memoryview(b"")   # a view: no copy of the ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.data[self.offsets[i]: self.offsets[i + 1]])

    def find(self, clip_id: str) -> int:
        key = clip_id.encode("utf-8")
        i = bisect.bisect_left(self, key)
        return i if i < len(self) and self[i] == key else -1


class IndexView:
    """The merged index for readers: the visible, readable clips (labels and the clean variant stored) in id
    order, each as (segment, row); entries are built only when a clip is asked for."""

    def __init__(self, segments: Sequence[Segment], cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.segments = list(segments)
        meta, shards, skipped, recordings = IndexMeta(), {}, {}, {}
        for seg in self.segments:
            meta = _agree(meta, seg, self.cache_dir)
            _apply_small(seg, shards, skipped, recordings)
            if skipped and seg.table.num_rows:       # a live row, readable or not, ends a skip (as merging does)
                ids = _one(seg.table.column("clip_id")).filter(_one(seg.table.column("live")))
                names = pa.array(list(skipped), pa.string())
                for cid in names.filter(pc.is_in(names, value_set=ids)).to_pylist():
                    del skipped[cid]
        self.meta, self.shards, self.recordings = meta, shards, recordings
        visible = self._visible()
        ids, splits, seg_no, row_no = [], [], [], []
        for k, (seg, rows) in enumerate(zip(self.segments, visible)):
            ids.append(_rows(seg.table.column("clip_id"), rows))
            splits.append(_rows(seg.table.column("split"), rows))
            seg_no.append(np.full(len(rows), k, np.int16))
            row_no.append(rows.astype(np.int32 if seg.table.num_rows < 2**31 else np.int64))
        all_ids = pa.concat_arrays(ids) if len(ids) > 1 else ids[0] if ids else pa.array([], pa.string())
        all_splits = pa.concat_arrays(splits) if len(splits) > 1 else splits[0] if splits else pa.array([], pa.string())
        self.seg_no = np.concatenate(seg_no) if seg_no else np.zeros(0, np.int16)
        self.row_no = np.concatenate(row_no) if row_no else np.zeros(0, np.int32)
        if len(ids) > 1:          # one segment's rows are in id order already (checked); several are merged
            order = _np(pc.sort_indices(all_ids))
            all_ids, all_splits = all_ids.take(pa.array(order)), all_splits.take(pa.array(order))
            self.seg_no, self.row_no = self.seg_no[order], self.row_no[order]
        self.ids = _SortedIds(all_ids)
        encoded = pc.dictionary_encode(all_splits)
        self.split_names: list[str] = encoded.dictionary.to_pylist()
        self.split_codes = _np(encoded.indices).astype(np.int16)
        self.skipped = {c: e for c, e in skipped.items() if self.ids.find(c) < 0}
        self.referenced = self._referenced(visible)
        _check_recordings(recordings, shards, self.cache_dir)
        missing = sorted(self.referenced - set(shards))
        if missing:
            raise CacheError(f"the index of {self.cache_dir} refers clips to shard {missing[0]}, which it does not "
                             f"list; {rebuild_hint(self.cache_dir)}")
        self._cols: list[dict[str, Any]] = [{} for _ in self.segments]

    def _visible(self) -> list[np.ndarray]:
        """Per segment, the rows that are the latest word on their clip and readable."""
        newer: list[pa.Array] = []
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(self.segments)
        for k in range(len(self.segments) - 1, -1, -1):
            seg = self.segments[k]
            ids = _one(seg.table.column("clip_id"))
            ok = _np(seg.table.column("live")).astype(bool) & (_np(seg.table.column("lab_shard")) >= 0)
            # the clean variant is stored: a clip's variants are in order, so variant 0 is its first
            variants = seg.lists["var_variant"]
            offsets, flat = _np(variants.offsets), _np(variants.flatten())
            nonempty = offsets[1:] > offsets[:-1]
            first = np.full(len(ids), -1, np.int64)
            first[nonempty] = flat[offsets[:-1][nonempty]]
            ok &= first == 0
            if newer:
                ok &= ~_np(pc.is_in(ids, value_set=pa.concat_arrays(newer))).astype(bool)
            out[k] = np.flatnonzero(ok)
            if k:
                newer.append(ids)
                if seg.skipped:
                    newer.append(pa.array(list(seg.skipped), pa.string()))
        return out

    def _referenced(self, visible: Sequence[np.ndarray]) -> set[str]:
        names: set[str] = set()
        for seg, rows in zip(self.segments, visible):
            if not len(rows):
                continue
            n = len(seg.shard_names)
            every = len(rows) == seg.table.num_rows
            lab = _np(seg.table.column("lab_shard"))
            lab = lab if every else lab[rows]
            vs = seg.lists["var_shard"] if every else seg.lists["var_shard"].take(pa.array(rows))
            counts = np.bincount(lab[lab >= 0], minlength=n) + np.bincount(_np(vs.flatten()), minlength=n)
            used = set(np.flatnonzero(counts).tolist())
            names |= {seg.shard_names[i] for i in used}
        return names

    # -- queries
    def __len__(self) -> int:
        return len(self.ids)

    def clip_ids(self, split: str | None = None) -> list[str]:
        if split is None:
            return self.ids.ids.to_pylist()
        if split not in self.split_names:
            return []
        mask = self.split_codes == self.split_names.index(split)
        return self.ids.ids.filter(pa.array(mask)).to_pylist()

    def entry(self, clip_id: str) -> ClipEntry | None:
        i = self.ids.find(clip_id)
        if i < 0:
            return None
        k, row = int(self.seg_no[i]), int(self.row_no[i])
        return self._entry(k, row)

    def _col(self, k: int, name: str) -> Any:
        cols = self._cols[k]
        if name not in cols:
            seg = self.segments[k]
            cols[name] = seg.lists[name].flatten() if name in VAR_COLUMNS else _one(seg.table.column(name))
            if name == "var_variant":
                cols["offsets"] = _np(seg.lists[name].offsets)
        return cols[name]

    def _entry(self, k: int, row: int) -> ClipEntry:
        seg = self.segments[k]
        c = lambda name: self._col(k, name)          # noqa: E731
        names = seg.shard_names
        self._col(k, "var_variant")
        offsets = self._cols[k]["offsets"]
        start, end = int(offsets[row]), int(offsets[row + 1])
        variants = {}
        for j in range(start, end):
            alias = c("var_alias")[j].as_py()
            variants[c("var_variant")[j].as_py()] = RowRef(names[c("var_shard")[j].as_py()], c("var_row")[j].as_py(),
                                                           c("var_fp")[j].as_py(), None if alias < 0 else alias)
        path = c("src_path")[row].as_py()
        source = None if path is None else SourceRecord(path, c("src_size")[row].as_py(),
                                                        c("src_mtime_ns")[row].as_py(), c("src_hash")[row].as_py())
        lab = c("lab_shard")[row].as_py()
        flags = c("flags")[row].as_py()
        if any(r.row < 0 for r in variants.values()) or (lab >= 0 and c("lab_row")[row].as_py() < 0):
            raise CacheError(f"{seg.path} is not a usable feature cache index segment (a negative row number); "
                             f"{rebuild_hint(self.cache_dir)}")
        return ClipEntry(split=c("split")[row].as_py(), text=c("text")[row].as_py(), source=source,
                         labels=None if lab < 0 else RowRef(names[lab], c("lab_row")[row].as_py(),
                                                            c("lab_fp")[row].as_py()),
                         variants=variants, **{f: bool(flags & b) for f, b in FLAG_BITS.items()})


def view_of_index(index: CacheIndex, cache_dir: Path) -> IndexView:
    """An in-memory segment of a whole index (an old JSON index read before it is converted)."""
    table, names = _clip_table(index.clips, ())
    seg = Segment.__new__(Segment)
    seg.path, seg.table = Path(cache_dir) / "index.json", table
    seg.meta, seg.shards, seg.dropped_shards, seg.shard_names = index.meta, dict(index.shards), set(), names
    seg.skipped, seg.unskipped, seg.recordings, seg.removed_recordings = dict(index.skipped), set(), \
        dict(index.recordings), set()
    seg.numbers = True
    seg._check_rows()
    return IndexView([seg], cache_dir)


def remove_files(paths: Iterable[Path]) -> None:
    """Delete files (one already gone, or a folder of that name, is left as it is)."""
    for path in paths:
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            if Path(path).is_file() and not Path(path).is_symlink():
                raise


def _fold(kept: dict, gone: set, upserts: Mapping, removals: Iterable) -> None:
    """One segment's removals, then its upserts, over a delta being folded (`gone`: what the delta removes)."""
    for key in removals:
        kept.pop(key, None)
        gone.add(key)
    for key, value in upserts.items():
        kept[key] = value
        gone.discard(key)


def fold_segments(cache_dir: Path, prefix: str, paths: Sequence[Path]) -> Path:
    """Segments of one writer (in order) as one segment saying the same, written after them; they are removed.
    -> the new segment's path."""
    shards: dict[str, ShardInfo] = {}
    acc = IndexDelta()
    for path in paths:
        table, doc = _open_table(path)
        seg = Segment(path, table, doc, shards)
        shards.update(seg.shards)
        acc.meta = acc.meta.merged(seg.meta)
        _fold(acc.shards, acc.dropped_shards, seg.shards, ())            # the order merging applies them in
        _fold(acc.shards, acc.dropped_shards, {}, seg.dropped_shards)
        live, removed = seg.clip_entries()
        _fold(acc.clips, acc.removed_clips, {}, removed)
        _fold(acc.skipped, acc.unskipped, seg.skipped, seg.unskipped)
        _fold(acc.clips, acc.removed_clips, {}, [c for c in seg.skipped if c in acc.clips])   # a skip removes the clip
        _fold(acc.skipped, acc.unskipped, {}, [c for c in live if c in acc.skipped])          # a live row ends a skip
        _fold(acc.clips, acc.removed_clips, live, ())
        _fold(acc.recordings, acc.removed_recordings, seg.recordings, seg.removed_recordings)
    out = write_segment(cache_dir, prefix, acc)
    remove_files(paths)
    return out


# --------------------------------------------------------------------------------------------------------------
# The whole index, whatever stores it


def load_merged_index(cache_dir: Path) -> CacheIndex | None:
    """The cache's index as Python objects: its segments merged, or, in a cache written before segments, its JSON
    index files merged. None when there is none. Refuses parts built with different settings."""
    segments = read_segments(Path(cache_dir))
    if segments:
        return merge_segments(segments, Path(cache_dir))
    return load_legacy_index(Path(cache_dir))


def index_metas(cache_dir: Path) -> dict[str, IndexMeta]:
    """The settings each usable index segment (or old JSON index file) of the cache was built with, by file name
    (unusable ones left out)."""
    if segment_files(Path(cache_dir)):
        return segment_metas(Path(cache_dir))
    return legacy_index_metas(Path(cache_dir))
