"""The cache writer: the one owner of every change to WORK/cache.

    writer = CacheWriter(cache_dir, part=None)
    with writer.locked():                       # the run's locks; tmp files of killed runs removed
        previous, note = writer.read_previous() # the merged index, or an empty one when it is unusable
        shards, dropped = writer.trusted_shards(previous)
        orphans = writer.orphan_rows(previous)  # rows of complete shards no index lists (a killed run)
        writer.start(meta, shards, clips, skipped)
        writer.add_feature_rows(rows, max_bytes); writer.save()   # as work finishes
        writer.add_recording(row, entry)        # a long test recording's whole log-mel (one shard each)
        writer.finish()                         # prune, final index, unreferenced files removed

Only names that match the shard pattern are ever joined to the cache folder, and only files inside it are
opened, renamed or deleted. Shards are trusted on size, mtime, ctime and inode; any difference (a rewrite with
its mtime restored, a copy) -- or a `.verify` note left by a reader that found damage -- re-takes the checksum,
and a shard that fails it is deleted so that its clips are computed again.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from collections import Counter
from typing import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np

from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.core.hashing import stable_hex
from whisper_tune.pipeline.cache.index import (CacheIndex, ClipEntry, IndexMeta, RecordingEntry, RowRef, SkipEntry,
                                               index_files, load_legacy_index, part_index_name)
from whisper_tune.pipeline.cache.segments import (COMPACT_SEGMENTS, FIRST_STAMP, IndexDelta, fold_segments,
                                                  is_segment_name, load_merged_index,
                                                  merge_segments,
                                                  read_segments, remove_files, segment_files, segment_prefix,
                                                  write_segment)
from whisper_tune.pipeline.cache.lock import CacheLock
from whisper_tune.pipeline.cache.reader import VERIFY_MARKER, CachedExample, CachedRecording, FeatureCache
from whisper_tune.pipeline.cache.shard import (FEATURE_KIND, LABEL_KIND, RECORDING_KIND, SHARD_NAME_RE, FeatureRow, LabelRow,
                    RecordingRow, ShardInfo, file_checksum, read_shard_table, shard_kind, shard_path, split_rows,
                    write_shard)

log = logging.getLogger(__name__)
INDEX_SAVE_INTERVAL_S = 1.0
TMP_RE = re.compile(r"^\.?(?P<name>.+)\.[0-9]+\.tmp$")
Orphans = dict[tuple[str, int | None], tuple[RowRef, ShardInfo]]


@dataclass(frozen=True)
class WrittenShard:
    """A feature shard some process wrote into the cache folder, and what the index needs of its rows (no
    feature bytes): per row (clip id, variant, fingerprint, alias_of)."""

    info: ShardInfo
    rows: tuple[tuple[str, int, str, int], ...]


def write_feature_shards(cache_dir: Path, prefix: str, rows: Sequence[FeatureRow],
                         max_bytes: int) -> list[WrittenShard]:
    """Feature rows as shards of at most max_bytes in cache_dir (each atomic, named by its rows): what a worker
    does with its task's rows before it hands the records to the run's one CacheWriter."""
    out = []
    for group in split_rows(rows, max_bytes):
        info = write_shard(cache_dir, prefix, FEATURE_KIND, group)
        out.append(WrittenShard(info, tuple((r.clip_id, r.variant, r.fingerprint, r.alias_of) for r in group)))
    return out


def shard_prefix(part: tuple[int, int] | None) -> str:
    return "all" if part is None else f"p{part[0]}of{part[1]}"


class _Tracked(dict):
    """The writer's clips: a dict that remembers which keys were set or removed since the last save, so a save
    appends only those (a million-clip index is never rewritten to record one task)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.changed: set[str] = set()

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key, *default):
        if key in self:
            self.changed.add(key)
        return super().pop(key, *default)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self):
        key, value = super().popitem()
        self.changed.add(key)
        return key, value

    def clear(self) -> None:
        self.changed |= set(self)
        super().clear()


def _diff(now: Mapping, before: Mapping) -> tuple[dict, set]:
    """(entries added or changed, keys removed) from `before` to `now` (entries compared by identity first)."""
    changed = {k: v for k, v in now.items() if (b := before.get(k, _MISSING)) is not v and b != v}
    return changed, set(before) - set(now)


_MISSING = object()
RUN_SEGMENTS = 16       # a run with more segments of its own than this folds them into one


class CacheWriter:
    def __init__(self, cache_dir: Path, part: tuple[int, int] | None = None, prefix: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.part = part
        self.prefix = prefix or shard_prefix(part)
        self.meta = IndexMeta()
        self.shards: dict[str, ShardInfo] = {}
        self.clips: _Tracked = _Tracked()
        self.skipped: dict[str, SkipEntry] = {}
        self.recordings: dict[str, RecordingEntry] = {}
        self.shards_written = 0
        self.segments_written = 0
        self._last_save = 0.0
        self._save_cost = 0.0
        self._previous = CacheIndex()        # what the index said when the run began
        self._saved = CacheIndex()           # what the index says since this run's last save (clips not kept)
        self._run_changed: set[str] = set()  # clips this run set or removed
        self._own_segments: list[Path] = []  # segments this run wrote
        self._legacy: list[Path] = []        # old JSON index files read, to convert
        self._discard = False                # the index on disk is unusable: its segments go at start
        self._owns_clip: Callable[[str], bool] = lambda cid: self.part is None
        self._still_used: set[str] = set()

    # -- before the run
    @contextmanager
    def locked(self) -> Iterator["CacheWriter"]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as locks:
            for lock in CacheLock.for_run(self.cache_dir, self.part):
                locks.enter_context(lock)
            self._remove_tmp_files()
            yield self

    def _owns(self, name: str) -> bool:
        """Files this run may delete: all of the cache's for a whole run, its own prefix for a part run."""
        if self.part is None or name.startswith(self.prefix + "-") or name == self._legacy_name():
            return True
        return is_segment_name(name) and segment_prefix(name) == self.prefix

    def _remove_tmp_files(self) -> None:
        """Leftovers of killed runs: never read, removed by the next run that owns them."""
        for path in self.cache_dir.glob("*.tmp"):
            match = TMP_RE.fullmatch(path.name)
            if match and path.is_file() and self._owns(match["name"]):
                path.unlink(missing_ok=True)

    def read_previous(self) -> tuple[CacheIndex, str]:
        """The merged index of earlier runs, or an empty one (with the reason) when it cannot be used."""
        try:
            if segment_files(self.cache_dir):
                previous = merge_segments(read_segments(self.cache_dir), self.cache_dir)
            else:
                previous = load_legacy_index(self.cache_dir) or CacheIndex()
                self._legacy = index_files(self.cache_dir)
        except CacheError as err:
            self._discard = True
            return CacheIndex(), f"ignoring the old index ({err}); rebuilding"
        self._previous = previous
        return previous, ""

    def trusted_shards(self, previous: CacheIndex) -> tuple[dict[str, ShardInfo], int]:
        """Listed shards that are present and intact (checksum re-taken unless the file's stat proves it);
        the others are deleted. -> (trusted shards, number dropped)"""
        verify_all = (self.cache_dir / VERIFY_MARKER).exists()
        good: dict[str, ShardInfo] = {}
        dropped = 0
        for name, info in previous.shards.items():
            path = shard_path(self.cache_dir, name)
            try:
                st = path.stat()
            except FileNotFoundError:
                dropped += 1
                continue
            if not verify_all and info.stat_matches(st):
                good[name] = info
            elif st.st_size == info.size and file_checksum(path) == info.checksum:
                good[name] = info.with_stat(st)
            else:
                dropped += 1
                path.unlink(missing_ok=True)
        return good, dropped

    def orphan_rows(self, previous: CacheIndex) -> Orphans:
        """Rows of complete shards this run owns that no index lists (a run killed before its index caught up);
        files that are not readable shards are deleted."""
        out: Orphans = {}
        for path in sorted(self.cache_dir.glob("*.arrow")):
            name = path.name
            if name in previous.shards or not SHARD_NAME_RE.fullmatch(name) or not self._owns(name):
                continue
            if shard_kind(name) == RECORDING_KIND:   # not adopted: a recording is computed again (few, and whole)
                continue
            try:
                table = read_shard_table(path)
            except CacheError:
                path.unlink(missing_ok=True)
                continue
            kind = shard_kind(name)
            info = ShardInfo(name, kind, file_checksum(path), 0, 0, table.num_rows).with_stat(path.stat())
            cols = {k: table.column(k).to_pylist() for k in ("clip_id", "fingerprint")}
            if kind == FEATURE_KIND:
                cols.update({k: table.column(k).to_pylist() for k in ("variant", "alias_of")})
            for row in range(table.num_rows):
                alias = cols["alias_of"][row] if kind == FEATURE_KIND else -1
                ref = RowRef(name, row, cols["fingerprint"][row], alias if alias >= 0 else None)
                variant = int(cols["variant"][row]) if kind == FEATURE_KIND else None
                out[(cols["clip_id"][row], variant)] = (ref, info)
        return out

    # -- during the run
    def start(self, meta: IndexMeta, shards: Mapping[str, ShardInfo], clips: Mapping[str, ClipEntry],
              skipped: Mapping[str, SkipEntry], owns: Callable[[str], bool] | None = None) -> None:
        """The run's first state of the index. What differs from the index on disk is appended as a segment; an
        old JSON index is converted to a segment first (once), an unusable index is removed. owns: for a part
        run, whether a clip id is this part's (a clip of the part gone from `clips` is removed; without it a
        part removes no clip)."""
        if self._discard:
            remove_files(p for p in segment_files(self.cache_dir) if self._owns(p.name))
            remove_files(p for p in index_files(self.cache_dir) if self.part is None or p.name == self._legacy_name())
        elif self._legacy:
            # the lowest stamp: the converted index applies before any segment, so parts converting at once agree
            write_segment(self.cache_dir, shard_prefix(None), IndexDelta.whole(self._previous), stamp=FIRST_STAMP)
            if self.part is None:     # parts leave the JSON files (ignored once segments exist) to a whole run
                remove_files(self._legacy)
            log.info(f"features: converted the old JSON index of {self.cache_dir} ({len(self._previous.clips)} "
                     f"clips) to index segments (index.*.arrow); older whisper-tune versions cannot read it")
        previous = self._previous
        self._owns_clip = (lambda cid: True) if self.part is None else (owns or (lambda cid: False))
        self._saved = replace(previous, clips={})
        self.meta, self.shards, self.skipped = meta, dict(shards), dict(skipped)
        self.clips = _Tracked(clips)
        changed = {cid for cid, e in clips.items() if (p := previous.clips.get(cid)) is not e and p != e}
        changed |= {cid for cid in previous.clips if cid not in clips and self._owns_clip(cid)}
        self.clips.changed = changed
        # shards that clips the run keeps listed (another part's, or not removable here) still need
        self._still_used = set() if self.part is None else {
            ref.shard for cid, e in previous.clips.items() if cid not in clips and cid not in changed
            for ref in e.refs()}
        self.save(force=True)

    def _legacy_name(self) -> str:
        return part_index_name(self.part)

    def add_feature_rows(self, rows: Sequence[FeatureRow], max_bytes: int) -> None:
        for shard in write_feature_shards(self.cache_dir, self.prefix, rows, max_bytes):
            self.record_features(shard)

    def record_features(self, shard: WrittenShard) -> None:
        """List a feature shard that this process or a worker wrote. The file is looked at (one stat), never
        read: a worker that wrote it somewhere this machine cannot see is refused here."""
        name = shard.info.name
        try:
            st = shard_path(self.cache_dir, name).stat()
        except FileNotFoundError:
            st = None
        if st is None or st.st_size != shard.info.size:
            raise CacheError(f"a worker wrote shard {name}, but {self.cache_dir} on this machine "
                             f"{'lacks it' if st is None else 'holds another file of that name'}: every worker "
                             f"must write into the same shared WORK folder as this machine sees it")
        self.shards[name] = shard.info.with_stat(st)
        self.shards_written += 1
        for row, (cid, variant, fp, alias) in enumerate(shard.rows):
            entry = self.clips.get(cid)
            if entry is not None:
                ref = RowRef(name, row, fp, alias if alias >= 0 else None)
                self.clips[cid] = replace(entry, variants={**entry.variants, variant: ref})

    def add_label_rows(self, rows: Sequence[LabelRow], max_bytes: int) -> None:
        for info, group in self._write(LABEL_KIND, rows, max_bytes):
            for row, r in enumerate(group):
                entry = self.clips.get(r.clip_id)
                if entry is not None:
                    self.clips[r.clip_id] = replace(entry, labels=RowRef(info.name, row, r.fingerprint))

    def _write(self, kind: str, rows: Sequence[FeatureRow | LabelRow],
               max_bytes: int) -> Iterator[tuple[ShardInfo, list]]:
        for group in split_rows(rows, max_bytes):
            info = write_shard(self.cache_dir, self.prefix, kind, group)
            self.shards[info.name] = info
            self.shards_written += 1
            yield info, group

    def add_recording(self, row: RecordingRow, entry: RecordingEntry) -> None:
        """A recording's whole log-mel as a shard of its own, listed with its entry (cues, split, source)."""
        info = write_shard(self.cache_dir, self.prefix, RECORDING_KIND, [row])
        self.shards[info.name] = info
        self.shards_written += 1
        self.recordings[row.clip_id] = replace(entry, features=RowRef(info.name, 0, row.fingerprint))

    def skip(self, clip_id: str, reason: str, fp: str) -> None:
        """A clip found unusable during the run: out of the index, into `skipped` (not retried while fp holds)."""
        entry = self.clips.pop(clip_id, None)
        self.skipped[clip_id] = SkipEntry(reason=reason, fp=fp, source=entry.source if entry else None,
                                          split=entry.split if entry else "")

    def snapshot(self) -> CacheIndex:
        return CacheIndex(meta=self.meta, shards=dict(self.shards), clips=dict(self.clips), skipped=dict(self.skipped),
                          recordings=dict(self.recordings))

    def _delta(self, since: CacheIndex, clip_keys: Collection[str], final: bool = True) -> IndexDelta:
        """What changed from `since` (clips: of clip_keys). Not final: recordings are not removed yet (a run
        lists the recordings it keeps after its first save)."""
        shards, dropped = _diff(self.shards, since.shards)
        skipped, unskipped = _diff(self.skipped, since.skipped)
        recordings, removed_recordings = _diff(self.recordings, since.recordings)
        if self.part is not None:     # a part removes only its own: the other parts' shards, skips, recordings stay
            dropped = {name for name in dropped if self._owns(name) and name not in self._still_used}
            unskipped = {cid for cid in unskipped if self._owns_clip(cid)}
            removed_recordings = {rid for rid in removed_recordings if self._owns_recording(since.recordings[rid])}
        if not final:
            removed_recordings = set()
        clips = {cid: self.clips[cid] for cid in clip_keys if cid in self.clips}
        return IndexDelta(meta=self.meta, shards=shards, dropped_shards=dropped, clips=clips,
                          removed_clips=set(clip_keys) - set(clips), skipped=skipped, unskipped=unskipped,
                          recordings=recordings, removed_recordings=removed_recordings)

    def _owns_recording(self, entry: RecordingEntry) -> bool:
        return entry.features is not None and self._owns(entry.features.shard)

    def _mark_saved(self, final: bool) -> None:
        recordings = dict(self.recordings) if final else {**self._saved.recordings, **self.recordings}
        self._saved = CacheIndex(meta=self.meta, shards=dict(self.shards), skipped=dict(self.skipped),
                                 recordings=recordings)
        self._run_changed |= self.clips.changed
        self.clips.changed = set()

    def save(self, force: bool = False, final: bool = False) -> None:
        """Append what changed since the last save as a segment (atomically), at most every second and never
        spending over ~10 % of the time on it; shards written since the last save are adopted by the next run
        after a kill."""
        now = time.perf_counter()
        if not (force or now - self._last_save >= max(INDEX_SAVE_INTERVAL_S, 10 * self._save_cost)):
            return
        delta = self._delta(self._saved, self.clips.changed, final)
        if not delta.empty() or replace(self.meta, part="") != replace(self._saved.meta, part=""):
            self._own_segments.append(write_segment(self.cache_dir, self.prefix, delta))
            self.segments_written += 1
        self._mark_saved(final)
        if len(self._own_segments) > RUN_SEGMENTS:
            self._fold_own_segments()
        self._last_save = time.perf_counter()
        self._save_cost = self._last_save - now

    def _fold_own_segments(self, final: bool = False) -> None:
        """This run's segments as one (what the run changed since it began, as of its last save), the others
        removed."""
        if len(self._own_segments) < 2:
            return
        folded = write_segment(self.cache_dir, self.prefix, self._delta(self._previous, self._run_changed, final))
        remove_files(self._own_segments)
        self._own_segments = [folded]

    # -- the end of the run
    def finish(self) -> CacheIndex:
        """Drop unreadable clips and unlisted shards, append the last changes (this run's segments folded into
        one; a whole run with many segments compacts them), remove what nothing refers to."""
        for cid in [cid for cid, e in self.clips.items() if not e.complete]:
            del self.clips[cid]
        self.recordings = {rid: e for rid, e in self.recordings.items() if e.features is not None}
        used = {ref.shard for e in [*self.clips.values(), *self.recordings.values()] for ref in e.refs()}
        self.shards = {n: s for n, s in self.shards.items() if n in used}
        self.save(force=True, final=True)
        self._fold_own_segments(final=True)
        segments = segment_files(self.cache_dir)
        if self.part is None:         # many segments, or the parts' segments: one whole segment
            if len(segments) > COMPACT_SEGMENTS or any(segment_prefix(p.name) != self.prefix for p in segments):
                self.compact()
        else:                         # a part's segments of many runs: folded into one
            own = [p for p in segments if segment_prefix(p.name) == self.prefix]
            if len(own) > COMPACT_SEGMENTS:
                self._own_segments = [fold_segments(self.cache_dir, self.prefix, own)]
        self._remove_unreferenced_shards()
        (self.cache_dir / VERIFY_MARKER).unlink(missing_ok=True)
        return self.snapshot()

    def compact(self) -> None:
        """The whole index as one segment; every other segment removed (a whole run only: it holds every lock)."""
        others = segment_files(self.cache_dir)
        self._own_segments = [write_segment(self.cache_dir, self.prefix, IndexDelta.whole(self.snapshot()))]
        remove_files(p for p in others if p not in self._own_segments)
        self.segments_written += 1

    def _remove_unreferenced_shards(self) -> None:
        if self.part is None:
            used = self.snapshot().referenced_shards()
        else:
            try:
                merged = load_merged_index(self.cache_dir) or CacheIndex()
            except CacheError:
                return     # another part's index is unusable: its shards are not ours to judge
            used = merged.referenced_shards()
        for path in self.cache_dir.glob("*.arrow"):
            if path.name not in used and SHARD_NAME_RE.fullmatch(path.name) and self._owns(path.name):
                path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Whole caches from in-memory examples (tests, tools, other pipelines)


def write_examples(cache_dir: Path, examples: Iterable[CachedExample], *, model: str = "in-memory",
                   tokenizer_fingerprint: str = "in-memory", text_normalization: str = "basic",
                   shard_max_mb: float = 64.0, transcripts: Mapping[str, str] | None = None,
                   text_in_train: Collection[str] = (), audit_ok: Collection[str] = (),
                   recordings: Iterable[CachedRecording] = ()) -> FeatureCache:
    """Write CachedExample objects (any number of variants per clip; variant 0 required) as a complete cache in
    cache_dir (replacing what is there), and return a reader on it. The labels and text of a clip are taken
    from its variant-0 example; features may be float16 or float32 (stored as float16). `transcripts`: clip id ->
    the transcript as a CSV has it; `text_in_train`: held-out clip ids whose sentence a train clip says;
    `audit_ok`: clip ids the CSV's `audit` column marks ok; `recordings`: long test recordings' whole log-mel
    and cues (long-form evaluation)."""
    by_clip: dict[str, dict[int, CachedExample]] = {}
    for ex in examples:
        by_clip.setdefault(ex.clip_id, {})[int(ex.variant)] = ex
    if not by_clip:
        raise ValueError("write_examples needs at least one example")
    n_mels_set = {ex.features.shape[0] for vs in by_clip.values() for ex in vs.values()}
    if len(n_mels_set) != 1:
        raise ValueError(f"all examples must have the same number of mel bins, got {sorted(n_mels_set)}")
    n_mels = n_mels_set.pop()
    meta = IndexMeta(n_mels=n_mels, variants=max(v for vs in by_clip.values() for v in vs) + 1, model=model,
                     tokenizer_fingerprint=tokenizer_fingerprint, feature_fingerprint=f"in-memory-{n_mels}",
                     text_normalization=text_normalization,
                     usable=dict(Counter(vs[0].split for vs in by_clip.values() if 0 in vs)))
    lab_rows, feat_rows, clips = [], [], {}
    for cid in sorted(by_clip):
        vs = by_clip[cid]
        if 0 not in vs:
            raise ValueError(f"clip {cid!r} has no variant 0 (the clean clip)")
        labels = np.asarray(vs[0].labels, np.int32)
        ex0 = vs[0]
        lab_rows.append(LabelRow(cid, labels, ex0.text, stable_hex("labels", cid, ex0.text, labels.tobytes(),
                                                                   np.asarray(ex0.prompt, np.int32).tobytes()),
                                 prompt=ex0.prompt, cue_tokens=ex0.cue_tokens, cue_starts=ex0.cue_starts,
                                 cue_ends=ex0.cue_ends))
        clips[cid] = ClipEntry(split=vs[0].split, text=(transcripts or {}).get(cid, ""),
                               text_in_train=cid in text_in_train, audit_ok=cid in audit_ok)
        for v in sorted(vs):
            f16 = np.ascontiguousarray(vs[v].features, dtype=np.float16)
            fp = stable_hex("features", cid, v, f16.tobytes(), repr(float(vs[v].floor)))
            feat_rows.append(FeatureRow(cid, v, fp, f16, float(vs[v].floor)))
    writer = CacheWriter(Path(cache_dir), prefix="mem")
    max_bytes = int(shard_max_mb * 1024 * 1024)
    with writer.locked():
        remove_files([*segment_files(writer.cache_dir), *index_files(writer.cache_dir)])   # replacing what is there
        writer.start(meta, {}, clips, {})
        writer.add_label_rows(lab_rows, max_bytes)
        writer.add_feature_rows(feat_rows, max_bytes)
        for rec in recordings:
            f16 = np.ascontiguousarray(rec.features, dtype=np.float16)
            fp = stable_hex("recording", rec.recording_id, f16.tobytes(), repr(float(rec.floor)))
            writer.add_recording(RecordingRow(rec.recording_id, fp, f16, float(rec.floor)),
                                 RecordingEntry(split=rec.split, seconds=float(rec.seconds), cues=tuple(rec.cues)))
        writer.finish()
    return FeatureCache(Path(cache_dir))
