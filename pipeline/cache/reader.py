"""The cache reader: (clip, variant) -> CachedExample, straight from memory-mapped shards.

Every shard's checksum is verified on first use, every row's identity and fingerprint against the index, so a
damaged, foreign or stale shard is refused with one line naming the command that rebuilds it. A shard that fails
its checksum is also noted in WORK/cache/.verify (when the folder is writable), so that the next `features` run
re-checks every shard even where size and times look unchanged.

This module needs no audio libraries: the training machine uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from whisper_tune.pipeline.core.constants import N_FRAMES
from whisper_tune.pipeline.core.errors import CacheError
from whisper_tune.pipeline.cache.index import ClipEntry, IndexMeta, RecordingEntry, ReferenceCue, RowRef, load_legacy_index
from whisper_tune.pipeline.cache.segments import IndexView, read_segments, view_of_index
from whisper_tune.pipeline.cache.shard import (FEATURE_KIND, LABEL_KIND, RECORDING_KIND, SCHEMAS, ShardInfo, file_checksum,
                                               rebuild_hint, shard_path)

CACHE_DIRNAME = "cache"
VERIFY_MARKER = ".verify"


def padded_frames(features: np.ndarray, floor: float) -> np.ndarray:
    """float32 (n_mels, 3000): stored frames (float16 (n_mels, T), the frames the audio reaches) followed by the
    floor value, as WhisperFeatureExtractor pads a clip to Whisper's 30 s window."""
    out = np.full((features.shape[0], N_FRAMES), floor, dtype=np.float32)
    t = min(features.shape[1], N_FRAMES)
    out[:, :t] = features[:, :t]
    return out


@dataclass(frozen=True)
class CachedExample:
    clip_id: str
    variant: int
    split: str
    features: np.ndarray   # float16 (n_mels, T), T <= 3000: only the frames the audio reaches
    floor: float           # the value of every frame past T
    labels: np.ndarray     # int32 token ids, prefix and <|endoftext|> included
    text: str              # the normalized transcript the labels came from
    # A window of a long recording (empty for a plain clip): its previous-text prompt ids, and per cue its
    # number of text ids in `labels` and its start and end (seconds from the window's start, 0.02 s grid).
    prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cue_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    cue_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cue_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def is_window(self) -> bool:
        """A window of a recording (its labels carry cues), not a plain clip."""
        return len(self.cue_tokens) > 0

    @property
    def n_mels(self) -> int:
        return int(self.features.shape[0])

    def padded(self) -> np.ndarray:
        """float32 (n_mels, 3000): what WhisperFeatureExtractor gives for this clip."""
        return padded_frames(self.features, self.floor)


@dataclass(frozen=True)
class CachedRecording:
    """A long test recording's whole log-mel and its reference cues (long-form evaluation from the cache)."""

    recording_id: str
    split: str
    seconds: float
    features: np.ndarray   # float16 (n_mels, T), T = samples // 160: WhisperFeatureExtractor(truncation=False)
    floor: float           # the value of a frame of silence
    cues: tuple[ReferenceCue, ...]

    @property
    def reference(self) -> str:
        """The cues' texts joined: what the whole recording says."""
        return " ".join(c.text.strip() for c in self.cues)

    def padded(self) -> np.ndarray:
        """float32 (n_mels, max(T, 3000)): a recording shorter than one window is padded with silence."""
        out = np.full((self.features.shape[0], max(N_FRAMES, self.features.shape[1])), self.floor, np.float32)
        out[:, :self.features.shape[1]] = self.features
        return out


@dataclass(frozen=True)
class ShardRows:
    """Row access without per-row Arrow conversions: ids and fingerprints as lists, numbers as arrays, and the
    features/labels payloads as NumPy views of the memory-mapped buffers (no copy into RAM)."""

    clip_id: list[str]
    fingerprint: list[str]
    variant: np.ndarray | None = None
    n_mels: np.ndarray | None = None
    n_frames: np.ndarray | None = None
    floor: np.ndarray | None = None
    payload_offsets: np.ndarray | None = None    # features: byte offsets; labels: value offsets
    payload: np.ndarray | None = None            # features: uint8 bytes; labels: int32 values
    text: list[str] | None = None
    lists: dict[str, tuple[np.ndarray, np.ndarray]] | None = None   # labels: prompt / cue columns (offsets, values)

    @staticmethod
    def of(batch: pa.RecordBatch) -> "ShardRows":
        base = dict(clip_id=batch.column("clip_id").to_pylist(), fingerprint=batch.column("fingerprint").to_pylist())
        if "features" in batch.schema.names:
            has_variant = "variant" in batch.schema.names     # recording shards have none
            feats = batch.column("features")
            offsets = np.frombuffer(feats.buffers()[1], dtype=np.int64)[feats.offset:feats.offset + len(feats) + 1]
            data = feats.buffers()[2]
            return ShardRows(
                **base,
                variant=batch.column("variant").to_numpy() if has_variant else None,
                n_mels=batch.column("n_mels").to_numpy(),
                n_frames=batch.column("n_frames").to_numpy(),
                floor=batch.column("floor").to_numpy(),
                payload_offsets=offsets,
                payload=np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8),
            )
        labels = batch.column("labels")
        return ShardRows(
            **base,
            payload_offsets=labels.offsets.to_numpy(),
            payload=labels.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
            text=batch.column("text").to_pylist(),
            lists={name: _list_column(batch.column(name)) for name in LABEL_LISTS},
        )

    def list_of(self, name: str, row: int) -> np.ndarray:
        offsets, values = self.lists[name]  # type: ignore[index]
        return values[int(offsets[row]): int(offsets[row + 1])]

    def payload_of(self, row: int) -> np.ndarray:
        start, end = int(self.payload_offsets[row]), int(self.payload_offsets[row + 1])  # type: ignore[index]
        return self.payload[start:end]  # type: ignore[index]


LABEL_LISTS = ("prompt", "cue_tokens", "cue_starts", "cue_ends")


def _list_column(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    return column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)


def _note_damage(cache_dir: Path) -> None:
    """Ask the next `features` run to re-check every shard's checksum (best effort: the folder may be read-only)."""
    try:
        (cache_dir / VERIFY_MARKER).touch()
    except OSError:
        pass


class _Shard:
    """One memory-mapped shard; its checksum is verified on first use."""

    def __init__(self, cache_dir: Path, info: ShardInfo) -> None:
        self.path = shard_path(cache_dir, info.name)
        self.info = info
        self._rows: ShardRows | None = None
        self._mmap: pa.MemoryMappedFile | None = None

    def _batch(self) -> pa.RecordBatch:
        self.verify()
        hint = rebuild_hint(self.path.parent)
        try:
            self._mmap = pa.memory_map(str(self.path), "r")
            reader = ipc.open_file(self._mmap)
            if reader.num_record_batches != 1:
                raise CacheError(f"shard {self.path} has {reader.num_record_batches} record batches, expected 1; "
                                 f"{hint}")
            batch = reader.get_batch(0)
        except (pa.ArrowInvalid, OSError) as err:
            raise CacheError(f"shard {self.path} is unreadable ({err}); {hint}") from None
        if not batch.schema.equals(SCHEMAS[self.info.kind], check_metadata=True) or batch.num_rows != self.info.rows:
            raise CacheError(f"shard {self.path} is not the shard the index lists (foreign or stale); {hint}")
        return batch

    def rows(self) -> ShardRows:
        """The shard's columns decoded once: small per-row values as Python/NumPy, payloads as views of the map."""
        if self._rows is None:
            self._rows = ShardRows.of(self._batch())
        return self._rows

    def verify(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"shard {self.path} is missing; {rebuild_hint(self.path.parent)}") from None
        if size != self.info.size or file_checksum(self.path) != self.info.checksum:
            _note_damage(self.path.parent)
            raise CacheError(f"shard {self.path} is corrupted (checksum mismatch); {rebuild_hint(self.path.parent)}")


class FeatureCache:
    """Read-only view of WORK/cache: (clip, variant) -> CachedExample. Memory-maps shards; verifies each shard's
    checksum on first use and every row's identity and fingerprint against the index."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        first = f"run `whisper-tune features --work {self.cache_dir.parent}` first"
        if not self.cache_dir.is_dir():
            raise CacheError(f"no feature cache at {self.cache_dir}; {first}")
        segments = read_segments(self.cache_dir, numbers=False)
        if segments:
            view = IndexView(segments, self.cache_dir)
        else:                                   # a cache written before index segments: its JSON index
            legacy = load_legacy_index(self.cache_dir)
            if legacy is None:
                raise CacheError(f"no feature cache index in {self.cache_dir}; {first}")
            view = view_of_index(legacy, self.cache_dir)
        self._view = view
        self.meta: IndexMeta = view.meta
        self._shards: dict[str, _Shard] = {}
        for name in sorted(view.referenced | {e.features.shard for e in view.recordings.values() if e.features}):
            shard = _Shard(self.cache_dir, view.shards[name])
            if not shard.path.is_file():
                raise CacheError(f"shard {shard.path} is missing; {rebuild_hint(self.cache_dir)}")
            self._shards[name] = shard
        self.skipped = dict(view.skipped)
        self._recordings: dict[str, RecordingEntry] = {rid: e for rid, e in sorted(view.recordings.items())
                                                       if e.features is not None}
        self._last: tuple[str, ClipEntry] | None = None

    def __reduce__(self):
        """Pickles as its folder: a process that unpickles it opens the cache itself (maps are not copied)."""
        return (FeatureCache, (self.cache_dir,))

    # -- queries
    def __len__(self) -> int:
        return len(self._view)

    def clip_ids(self, split: str | None = None) -> list[str]:
        return self._view.clip_ids(split)

    def skipped_count(self, split: str) -> int:
        """Clips of `split` that `features` refused (their reason is in the index); older skip records lack the
        split and count for every split."""
        return sum(1 for e in self.skipped.values() if e.split in (split, ""))

    def text_in_train(self, clip_id: str) -> bool:
        """Whether a train clip says this held-out clip's sentence (validate's leakage flag, recorded here)."""
        return self._entry(clip_id).text_in_train

    def audit_ok(self, clip_id: str) -> bool:
        """Whether the CSV's `audit` column marks this clip ok (validate's audit_ok, recorded here)."""
        return self._entry(clip_id).audit_ok

    def split_of(self, clip_id: str) -> str:
        return self._entry(clip_id).split

    def transcript(self, clip_id: str) -> str:
        """The transcript as the CSV has it (before normalization); "" if the cache does not record it."""
        return self._entry(clip_id).text

    def variants(self, clip_id: str) -> list[int]:
        return sorted(self._entry(clip_id).variants)

    def get(self, clip_id: str, variant: int = 0) -> CachedExample:
        entry = self._entry(clip_id)
        vref = entry.variants.get(int(variant))
        if vref is None:
            raise KeyError(f"clip {clip_id!r} has no variant {variant}; it has {self.variants(clip_id)}")
        if vref.alias is not None:
            self._check_row(vref, clip_id, int(variant), FEATURE_KIND)  # the alias row itself
            vref = entry.variants.get(vref.alias)
            if vref is None:
                raise CacheError(f"clip {clip_id!r} variant {variant} aliases a variant the index lacks; "
                                 f"{rebuild_hint(self.cache_dir)}")
        feats, floor = self._features(vref, clip_id)
        rows = self._check_row(entry.labels, clip_id, None, LABEL_KIND)  # type: ignore[arg-type]
        row = entry.labels.row  # type: ignore[union-attr]
        return CachedExample(clip_id=clip_id, variant=int(variant), split=entry.split, features=feats, floor=floor,
                             labels=rows.payload_of(row), text=rows.text[row],  # type: ignore[index]
                             **{name: rows.list_of(name, row) for name in LABEL_LISTS})

    def recording_ids(self, split: str | None = None) -> list[str]:
        """The long recordings whose whole log-mel is stored (test recordings), in id order."""
        return [r for r, e in self._recordings.items() if split is None or e.split == split]

    def recording(self, recording_id: str) -> CachedRecording:
        try:
            entry = self._recordings[recording_id]
        except KeyError:
            raise KeyError(f"recording {recording_id!r} is not in the feature cache {self.cache_dir}") from None
        ref = entry.features
        rows = self._check_row(ref, recording_id, None, RECORDING_KIND)  # type: ignore[arg-type]
        feats, floor = self._payload(rows, ref, recording_id)  # type: ignore[arg-type]
        return CachedRecording(recording_id=recording_id, split=entry.split, seconds=entry.seconds, features=feats,
                               floor=floor, cues=entry.cues)

    def verify(self) -> None:
        """Check every shard's checksum now (training may prefer this to first-use checks)."""
        for shard in self._shards.values():
            shard.verify()

    # -- internals
    def _entry(self, clip_id: str) -> ClipEntry:
        if self._last is not None and self._last[0] == clip_id:
            return self._last[1]
        entry = self._view.entry(clip_id)
        if entry is None:
            raise KeyError(f"clip {clip_id!r} is not in the feature cache {self.cache_dir}")
        self._last = (clip_id, entry)
        return entry

    def _check_row(self, ref: RowRef, clip_id: str, variant: int | None, kind: str) -> ShardRows:
        shard = self._shards[ref.shard]
        hint = rebuild_hint(self.cache_dir)
        if shard.info.kind != kind:
            raise CacheError(f"shard {shard.path} holds {shard.info.kind} rows, expected {kind}; {hint}")
        rows = shard.rows()
        if not 0 <= ref.row < len(rows.clip_id):
            raise CacheError(f"shard {shard.path} has no row {ref.row}; {hint}")
        ok = (rows.clip_id[ref.row] == clip_id
              and rows.fingerprint[ref.row] == ref.fp
              and (variant is None or rows.variant is None or int(rows.variant[ref.row]) == variant))
        if not ok:
            raise CacheError(f"shard {shard.path} row {ref.row} is not clip {clip_id!r} as the index records it "
                             f"(foreign or stale shard); {hint}")
        return rows

    def _features(self, ref: RowRef, clip_id: str) -> tuple[np.ndarray, float]:
        return self._payload(self._check_row(ref, clip_id, None, FEATURE_KIND), ref, clip_id)

    def _payload(self, rows: ShardRows, ref: RowRef, clip_id: str) -> tuple[np.ndarray, float]:
        n_mels, t = int(rows.n_mels[ref.row]), int(rows.n_frames[ref.row])  # type: ignore[index]
        hint = rebuild_hint(self.cache_dir)
        if n_mels != self.meta.n_mels:
            raise CacheError(f"clip {clip_id!r} has {n_mels} mel bins, the cache says {self.meta.n_mels}; {hint}")
        feats = rows.payload_of(ref.row).view(np.float16)
        if feats.size != n_mels * t:
            raise CacheError(f"clip {clip_id!r} has {feats.size} feature values, expected {n_mels}x{t}; {hint}")
        return feats.reshape(n_mels, t), float(rows.floor[ref.row])  # type: ignore[index]


def open_cache(work_dir: Path) -> FeatureCache:
    """The cache of a work folder (WORK/cache)."""
    return FeatureCache(Path(work_dir) / CACHE_DIRNAME)
