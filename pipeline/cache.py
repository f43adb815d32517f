"""The feature cache: Arrow shards + JSON index under WORK/cache/ (the contract between `features` and `train`).

Layout
    WORK/cache/index.json                  written by a whole run (`whisper-tune features`)
    WORK/cache/index.part-I-of-N.json      written by `--part I/N` runs; the reader merges every index file
    WORK/cache/<prefix>-feat-<hash>.arrow  feature rows: one per (clip, variant), float16 (n_mels, T) bytes
    WORK/cache/<prefix>-lab-<hash>.arrow   label rows: one per clip, int32 token ids + normalized text
    WORK/cache/.lock                       held (fcntl.flock) by the run writing the cache

Shards are written whole (temporary name, then os.replace) and listed in the index with their blake2b checksum,
size and row count. Every row carries the fingerprint of what produced it; the index records the same
fingerprint per clip-variant, so a shard from another cache (or a stale one) is refused, never silently used.

A variant in which no augmentation fired equals the clean clip: it is stored as an alias row (`alias_of = 0`,
no features) and the reader returns variant 0's features for it.

This module needs no audio libraries: the training machine uses it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .constants import N_FRAMES
from .errors import CacheError

CACHE_DIRNAME = "cache"
INDEX_NAME = "index.json"
PART_INDEX_GLOB = "index.part-*-of-*.json"
LOCK_NAME = ".lock"
SHARD_SUFFIX = ".arrow"
TMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1

FEATURE_KIND = "feat"
LABEL_KIND = "lab"

FEATURE_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("variant", pa.int16()),
        ("alias_of", pa.int16()),       # -1: real row; 0: "no transform fired", same as the clean variant
        ("n_mels", pa.int16()),
        ("n_frames", pa.int32()),       # T, frames stored (the ones the audio reaches)
        ("floor", pa.float32()),        # value of every frame past T
        ("features", pa.large_binary()),  # float16 C-order (n_mels, T)
        ("fingerprint", pa.string()),
    ],
    metadata={"whisper_tune": f"{FEATURE_KIND}-v{FORMAT_VERSION}"},
)
LABEL_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("fingerprint", pa.string()),
    ],
    metadata={"whisper_tune": f"{LABEL_KIND}-v{FORMAT_VERSION}"},
)


def rebuild_hint(cache_dir: Path) -> str:
    return f"re-run `whisper-tune features --work {Path(cache_dir).parent}` to rebuild it"


# --------------------------------------------------------------------------------------------------------------
# Rows and shards


@dataclass(frozen=True)
class FeatureRow:
    """One (clip, variant) as written to a feature shard. features is None for an alias row."""

    clip_id: str
    variant: int
    fingerprint: str
    features: np.ndarray | None = None   # float16 (n_mels, T)
    floor: float = 0.0
    alias_of: int = -1

    @property
    def nbytes(self) -> int:
        return 0 if self.features is None else int(self.features.nbytes)


@dataclass(frozen=True)
class LabelRow:
    clip_id: str
    labels: np.ndarray    # int32
    text: str
    fingerprint: str

    @property
    def nbytes(self) -> int:
        return int(np.asarray(self.labels).nbytes) + len(self.text.encode("utf-8"))


@dataclass(frozen=True)
class ShardInfo:
    name: str
    kind: str            # "feat" or "lab"
    checksum: str        # blake2b-128 of the file bytes
    size: int            # bytes
    mtime_ns: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "checksum": self.checksum, "size": self.size,
                "mtime_ns": self.mtime_ns, "rows": self.rows}

    @staticmethod
    def from_json(name: str, d: dict[str, Any]) -> "ShardInfo":
        return ShardInfo(name=name, kind=d["kind"], checksum=d["checksum"], size=int(d["size"]),
                         mtime_ns=int(d.get("mtime_ns", 0)), rows=int(d["rows"]))


def file_checksum(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _feature_batch(rows: Sequence[FeatureRow]) -> pa.RecordBatch:
    feats = []
    n_mels, n_frames = [], []
    for r in rows:
        if r.features is None:
            feats.append(b"")
            n_mels.append(0)
            n_frames.append(0)
        else:
            a = np.ascontiguousarray(r.features, dtype=np.float16)
            if a.ndim != 2:
                raise ValueError(f"features for {r.clip_id} must be 2-D (n_mels, T), got shape {a.shape}")
            feats.append(a.tobytes())
            n_mels.append(a.shape[0])
            n_frames.append(a.shape[1])
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.clip_id for r in rows], pa.string()),
            pa.array([r.variant for r in rows], pa.int16()),
            pa.array([r.alias_of for r in rows], pa.int16()),
            pa.array(n_mels, pa.int16()),
            pa.array(n_frames, pa.int32()),
            pa.array([float(r.floor) for r in rows], pa.float32()),
            pa.array(feats, pa.large_binary()),
            pa.array([r.fingerprint for r in rows], pa.string()),
        ],
        schema=FEATURE_SCHEMA,
    )


def _label_batch(rows: Sequence[LabelRow]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r.clip_id for r in rows], pa.string()),
            pa.array([np.asarray(r.labels, dtype=np.int32) for r in rows], pa.list_(pa.int32())),
            pa.array([r.text for r in rows], pa.string()),
            pa.array([r.fingerprint for r in rows], pa.string()),
        ],
        schema=LABEL_SCHEMA,
    )


def shard_name(prefix: str, kind: str, rows: Sequence[FeatureRow | LabelRow]) -> str:
    """Deterministic name from the rows' identities and fingerprints (same inputs -> same name)."""
    h = hashlib.blake2b(digest_size=10)
    for r in rows:
        h.update(f"{r.clip_id}\0{getattr(r, 'variant', '')}\0{r.fingerprint}\n".encode("utf-8"))
    return f"{prefix}-{kind}-{h.hexdigest()}{SHARD_SUFFIX}"


def write_shard(cache_dir: Path, prefix: str, kind: str, rows: Sequence[FeatureRow | LabelRow]) -> ShardInfo:
    """Write rows as one Arrow IPC file, atomically (tmp name, fsync, os.replace). Returns its index entry."""
    if not rows:
        raise ValueError("write_shard needs at least one row")
    batch = _feature_batch(rows) if kind == FEATURE_KIND else _label_batch(rows)  # type: ignore[arg-type]
    name = shard_name(prefix, kind, rows)
    final = cache_dir / name
    tmp = cache_dir / f"{name}.{os.getpid()}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        with ipc.new_file(f, batch.schema) as writer:
            writer.write_batch(batch)
        f.flush()
        os.fsync(f.fileno())
    checksum = file_checksum(tmp)
    os.replace(tmp, final)
    st = final.stat()
    return ShardInfo(name=name, kind=kind, checksum=checksum, size=st.st_size, mtime_ns=st.st_mtime_ns,
                     rows=len(rows))


def split_rows(rows: Sequence[Any], max_bytes: int) -> Iterator[list[Any]]:
    """Consecutive groups of rows whose payload stays under max_bytes (a single larger row gets its own group)."""
    group: list[Any] = []
    size = 0
    for r in rows:
        if group and size + r.nbytes > max_bytes:
            yield group
            group, size = [], 0
        group.append(r)
        size += r.nbytes
    if group:
        yield group


def read_shard_table(path: Path) -> pa.Table:
    """Read a whole shard (used to adopt or inspect it); raises CacheError if it is not a cache shard."""
    try:
        with pa.memory_map(str(path), "r") as source:
            table = ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise CacheError(f"{path} is not a readable cache shard ({err}); {rebuild_hint(path.parent)}") from None
    tag = (table.schema.metadata or {}).get(b"whisper_tune", b"").decode()
    if tag not in (f"{FEATURE_KIND}-v{FORMAT_VERSION}", f"{LABEL_KIND}-v{FORMAT_VERSION}"):
        raise CacheError(f"{path} is not a whisper-tune cache shard; {rebuild_hint(path.parent)}")
    return table


# --------------------------------------------------------------------------------------------------------------
# The index


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def part_index_name(part: tuple[int, int] | None) -> str:
    if part is None:
        return INDEX_NAME
    return f"index.part-{part[0]}-of-{part[1]}.json"


@dataclass
class CacheIndex:
    """The mutable index of one writer (or the merged view of all index files, for reading).

    clips[clip_id] = {"split": str,
                      "source": {"path", "size", "mtime_ns", "hash"}        (optional; featurize bookkeeping)
                      "labels": {"shard", "row", "fp"},
                      "variants": {"0": {"shard", "row", "fp"}, "1": {"shard", "row", "fp", "alias": 0}, ...}}
    skipped[clip_id] = {"reason": str, "fp": str}
    """

    meta: dict[str, Any] = field(default_factory=dict)
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    clips: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": f"whisper-tune-cache-v{FORMAT_VERSION}",
            "meta": self.meta,
            "shards": {n: s.to_json() for n, s in sorted(self.shards.items())},
            "clips": self.clips,
            "skipped": self.skipped,
        }

    @staticmethod
    def from_json(d: dict[str, Any], where: Path) -> "CacheIndex":
        if not isinstance(d, dict) or d.get("format") != f"whisper-tune-cache-v{FORMAT_VERSION}":
            raise CacheError(f"{where} is not a whisper-tune cache index; {rebuild_hint(where.parent)}")
        try:
            return CacheIndex(
                meta=dict(d["meta"]),
                shards={n: ShardInfo.from_json(n, s) for n, s in d["shards"].items()},
                clips=dict(d["clips"]),
                skipped=dict(d.get("skipped", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CacheError(f"{where} is damaged ({err!r}); {rebuild_hint(where.parent)}") from None

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    def referenced_shards(self) -> set[str]:
        used: set[str] = set()
        for entry in self.clips.values():
            lab = entry.get("labels")
            if lab:
                used.add(lab["shard"])
            for v in entry.get("variants", {}).values():
                used.add(v["shard"])
        return used

    def prune_shards(self) -> None:
        """Forget shards no clip refers to any more."""
        used = self.referenced_shards()
        self.shards = {n: s for n, s in self.shards.items() if n in used}


def index_files(cache_dir: Path) -> list[Path]:
    """index.json first, then part index files oldest first (a later file overrides an earlier one)."""
    files = []
    whole = cache_dir / INDEX_NAME
    if whole.is_file():
        files.append(whole)
    parts = [p for p in cache_dir.glob(PART_INDEX_GLOB) if p.is_file()]
    parts.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return files + parts


def load_index(path: Path) -> CacheIndex:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"cannot read {path} ({err}); {rebuild_hint(path.parent)}") from None
    return CacheIndex.from_json(data, path)


_META_MUST_AGREE = ("n_mels", "feature_fingerprint", "tokenizer_fingerprint")


def load_merged_index(cache_dir: Path) -> CacheIndex | None:
    """All index files merged (None when there is none). Refuses parts built with different settings."""
    files = index_files(cache_dir)
    if not files:
        return None
    merged = CacheIndex()
    for path in files:
        idx = load_index(path)
        for key in _META_MUST_AGREE:   # an empty value is "not known yet" (a run in progress)
            if idx.meta.get(key) and merged.meta.get(key) and idx.meta[key] != merged.meta[key]:
                raise CacheError(
                    f"{path.name} was built with different settings ({key}) than the rest of {cache_dir}; "
                    f"{rebuild_hint(cache_dir)}"
                )
        merged.meta.update({k: v for k, v in idx.meta.items() if v not in ("", None) or k not in merged.meta})
        merged.shards.update(idx.shards)
        merged.clips.update(idx.clips)
        merged.skipped.update(idx.skipped)
        for cid in idx.clips:
            merged.skipped.pop(cid, None)
    return merged


# --------------------------------------------------------------------------------------------------------------
# The lock


_HELD_LOCK_FDS: set[int] = set()


def _part_lock_holders(cache_dir: Path) -> list[str]:
    """Who holds the part locks right now (a lock we can take is not held)."""
    out = []
    for path in sorted(cache_dir.glob(f"{LOCK_NAME}.part-*")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            out.append(f"{text or 'a process'} ({path.name.removeprefix(LOCK_NAME + '.')})")
        finally:
            os.close(fd)
    return out


def _close_lock_fds_in_child() -> None:
    """Forked workers must not keep the cache lock alive after the run that took it has died."""
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_lock_fds_in_child)


class CacheLock:
    """fcntl.flock on a lock file holding "pid host start-time". A dead holder's lock is free again (the kernel
    drops flocks with the process), so a stale file is simply taken over.

    A whole run takes WORK/cache/.lock exclusively. A `--part i/N` run takes it shared (parts run side by side)
    and its own `.lock.part-i-of-N` exclusively; so a whole run and part runs never write at the same time."""

    def __init__(self, cache_dir: Path, name: str = LOCK_NAME, shared: bool = False) -> None:
        self.path = cache_dir / name
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> "CacheLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CacheError(f"cannot lock {self.path}: {err.strerror}") from None
            holders = self.holder() if self.shared else "; ".join(_part_lock_holders(self.path.parent)) or self.holder()
            raise CacheError(
                f"the feature cache {self.path.parent} is being written by {holders or 'another process'}; wait "
                f"for that run to finish (or stop it), then re-run `whisper-tune features --work "
                f"{self.path.parent.parent}`"
            ) from None
        if not self.shared:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        _HELD_LOCK_FDS.add(fd)
        return self

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCK_FDS.discard(self._fd)
            try:
                if not self.shared:
                    os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "CacheLock":
        return self.acquire()

    @staticmethod
    def for_run(cache_dir: Path, part: tuple[int, int] | None) -> list["CacheLock"]:
        """The locks a features run takes, in order."""
        if part is None:
            return [CacheLock(cache_dir)]
        return [CacheLock(cache_dir, shared=True), CacheLock(cache_dir, f"{LOCK_NAME}.part-{part[0]}-of-{part[1]}")]

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------------------------
# The reader


@dataclass(frozen=True)
class CacheMeta:
    n_mels: int
    variants: int
    model: str
    tokenizer_fingerprint: str
    feature_fingerprint: str = ""
    text_normalization: str = ""


@dataclass(frozen=True)
class CachedExample:
    clip_id: str
    variant: int
    split: str
    features: np.ndarray   # float16 (n_mels, T), T <= 3000: only the frames the audio reaches
    floor: float           # the value of every frame past T
    labels: np.ndarray     # int32 token ids, prefix and <|endoftext|> included
    text: str              # the normalized transcript the labels came from

    @property
    def n_mels(self) -> int:
        return int(self.features.shape[0])

    def padded(self) -> np.ndarray:
        """float32 (n_mels, 3000): what WhisperFeatureExtractor gives for this clip."""
        out = np.full((self.features.shape[0], N_FRAMES), self.floor, dtype=np.float32)
        t = min(self.features.shape[1], N_FRAMES)
        out[:, :t] = self.features[:, :t]
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

    @staticmethod
    def of(batch: pa.RecordBatch) -> "ShardRows":
        base = dict(clip_id=batch.column("clip_id").to_pylist(), fingerprint=batch.column("fingerprint").to_pylist())
        if "features" in batch.schema.names:
            feats = batch.column("features")
            offsets = np.frombuffer(feats.buffers()[1], dtype=np.int64)[feats.offset:feats.offset + len(feats) + 1]
            data = feats.buffers()[2]
            return ShardRows(
                **base,
                variant=batch.column("variant").to_numpy(),
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
        )

    def payload_of(self, row: int) -> np.ndarray:
        start, end = int(self.payload_offsets[row]), int(self.payload_offsets[row + 1])  # type: ignore[index]
        return self.payload[start:end]  # type: ignore[index]


class _Shard:
    """One memory-mapped shard; its checksum is verified on first use."""

    def __init__(self, cache_dir: Path, info: ShardInfo) -> None:
        self.path = cache_dir / info.name
        self.info = info
        self._batch: pa.RecordBatch | None = None
        self._mmap: pa.MemoryMappedFile | None = None
        self._rows: ShardRows | None = None

    def batch(self) -> pa.RecordBatch:
        if self._batch is None:
            self.verify()
            try:
                self._mmap = pa.memory_map(str(self.path), "r")
                reader = ipc.open_file(self._mmap)
                if reader.num_record_batches != 1:
                    raise CacheError(f"shard {self.path} has {reader.num_record_batches} record batches; expected 1")
                batch = reader.get_batch(0)
            except (pa.ArrowInvalid, OSError) as err:
                raise CacheError(f"shard {self.path} is unreadable ({err}); {rebuild_hint(self.path.parent)}") from None
            want = FEATURE_SCHEMA if self.info.kind == FEATURE_KIND else LABEL_SCHEMA
            if not batch.schema.equals(want, check_metadata=True) or batch.num_rows != self.info.rows:
                raise CacheError(f"shard {self.path} is not the shard the index lists (foreign or stale); "
                                 f"{rebuild_hint(self.path.parent)}")
            self._batch = batch
        return self._batch

    def rows(self) -> "ShardRows":
        """The shard's columns decoded once: small per-row values as Python/NumPy, payloads as views of the map."""
        if self._rows is None:
            self._rows = ShardRows.of(self.batch())
        return self._rows

    def verify(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"shard {self.path} is missing; {rebuild_hint(self.path.parent)}") from None
        if size != self.info.size or file_checksum(self.path) != self.info.checksum:
            raise CacheError(f"shard {self.path} is corrupted (checksum mismatch); {rebuild_hint(self.path.parent)}")


class FeatureCache:
    """Read-only view of WORK/cache: (clip, variant) -> CachedExample. Memory-maps shards; verifies each shard's
    checksum on first use and every row's identity and fingerprint against the index."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        if not self.cache_dir.is_dir():
            raise CacheError(f"no feature cache at {self.cache_dir}; run `whisper-tune features "
                             f"--work {self.cache_dir.parent}` first")
        index = load_merged_index(self.cache_dir)
        if index is None:
            raise CacheError(f"no feature cache index in {self.cache_dir}; run `whisper-tune features "
                             f"--work {self.cache_dir.parent}` first")
        m = index.meta
        try:
            self.meta = CacheMeta(
                n_mels=int(m["n_mels"]), variants=int(m["variants"]), model=str(m.get("model", "")),
                tokenizer_fingerprint=str(m.get("tokenizer_fingerprint", "")),
                feature_fingerprint=str(m.get("feature_fingerprint", "")),
                text_normalization=str(m.get("text_normalization", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CacheError(f"the cache index in {self.cache_dir} lacks {err}; {rebuild_hint(self.cache_dir)}") from None
        self._clips = {cid: e for cid, e in sorted(index.clips.items()) if e.get("labels") and "0" in e.get("variants", {})}
        self._shards: dict[str, _Shard] = {}
        for cid, entry in self._clips.items():
            refs = [entry["labels"], *entry["variants"].values()]
            for ref in refs:
                name = ref["shard"]
                if name not in self._shards:
                    info = index.shards.get(name)
                    if info is None:
                        raise CacheError(f"clip {cid} refers to shard {name}, which the index does not list; "
                                         f"{rebuild_hint(self.cache_dir)}")
                    if not (self.cache_dir / name).is_file():
                        raise CacheError(f"shard {self.cache_dir / name} is missing; {rebuild_hint(self.cache_dir)}")
                    self._shards[name] = _Shard(self.cache_dir, info)
        self.skipped = dict(index.skipped)

    # -- queries
    def __len__(self) -> int:
        return len(self._clips)

    def clip_ids(self, split: str | None = None) -> list[str]:
        if split is None:
            return list(self._clips)
        return [c for c, e in self._clips.items() if e.get("split") == split]

    def split_of(self, clip_id: str) -> str:
        return str(self._entry(clip_id).get("split", ""))

    def transcript(self, clip_id: str) -> str:
        """The transcript as the CSV has it (before normalization); "" if the cache does not record it."""
        return str(self._entry(clip_id).get("text", ""))

    def variants(self, clip_id: str) -> list[int]:
        return sorted(int(v) for v in self._entry(clip_id)["variants"])

    def get(self, clip_id: str, variant: int = 0) -> CachedExample:
        entry = self._entry(clip_id)
        vref = entry["variants"].get(str(int(variant)))
        if vref is None:
            raise KeyError(f"clip {clip_id!r} has no variant {variant}; it has {self.variants(clip_id)}")
        if "alias" in vref:
            self._check_row(vref, clip_id, int(variant), FEATURE_KIND)  # the alias row itself
            vref = entry["variants"][str(int(vref["alias"]))]
        feats, floor = self._features(vref, clip_id)
        labels, text = self._labels(entry["labels"], clip_id)
        return CachedExample(clip_id=clip_id, variant=int(variant), split=str(entry.get("split", "")),
                             features=feats, floor=floor, labels=labels, text=text)

    def verify(self) -> None:
        """Check every shard's checksum now (training may prefer this to first-use checks)."""
        for shard in self._shards.values():
            shard.verify()

    # -- internals
    def _entry(self, clip_id: str) -> dict[str, Any]:
        try:
            return self._clips[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in the feature cache {self.cache_dir}") from None

    def _check_row(self, ref: dict[str, Any], clip_id: str, variant: int | None, kind: str) -> "ShardRows":
        shard = self._shards[ref["shard"]]
        if shard.info.kind != kind:
            raise CacheError(f"shard {shard.path} holds {shard.info.kind} rows, expected {kind}; "
                             f"{rebuild_hint(self.cache_dir)}")
        rows = shard.rows()
        row = int(ref["row"])
        if not 0 <= row < len(rows.clip_id):
            raise CacheError(f"shard {shard.path} has no row {row}; {rebuild_hint(self.cache_dir)}")
        ok = (rows.clip_id[row] == clip_id
              and rows.fingerprint[row] == ref["fp"]
              and (variant is None or rows.variant is None or int(rows.variant[row]) == variant))
        if not ok:
            raise CacheError(f"shard {shard.path} row {row} is not clip {clip_id!r} as the index records it "
                             f"(foreign or stale shard); {rebuild_hint(self.cache_dir)}")
        return rows

    def _features(self, ref: dict[str, Any], clip_id: str) -> tuple[np.ndarray, float]:
        rows = self._check_row(ref, clip_id, None, FEATURE_KIND)
        row = int(ref["row"])
        n_mels, t = int(rows.n_mels[row]), int(rows.n_frames[row])
        if n_mels != self.meta.n_mels:
            raise CacheError(f"clip {clip_id!r} has {n_mels} mel bins, the cache says {self.meta.n_mels}; "
                             f"{rebuild_hint(self.cache_dir)}")
        feats = rows.payload_of(row).view(np.float16)
        if feats.size != n_mels * t:
            raise CacheError(f"clip {clip_id!r} has {feats.size} feature values, expected {n_mels}x{t}; "
                             f"{rebuild_hint(self.cache_dir)}")
        return feats.reshape(n_mels, t), float(rows.floor[row])

    def _labels(self, ref: dict[str, Any], clip_id: str) -> tuple[np.ndarray, str]:
        rows = self._check_row(ref, clip_id, None, LABEL_KIND)
        row = int(ref["row"])
        return rows.payload_of(row), rows.text[row]


def open_cache(work_dir: Path) -> FeatureCache:
    """The cache of a work folder (WORK/cache)."""
    return FeatureCache(Path(work_dir) / CACHE_DIRNAME)


# --------------------------------------------------------------------------------------------------------------
# A simple public writer: build a cache from in-memory examples (tests, tools, other pipelines)


def write_examples(
    cache_dir: Path,
    examples: Iterable[CachedExample],
    *,
    model: str = "in-memory",
    tokenizer_fingerprint: str = "in-memory",
    text_normalization: str = "basic",
    shard_max_mb: float = 64.0,
) -> FeatureCache:
    """Write CachedExample objects (any number of variants per clip; variant 0 required) as a complete cache in
    cache_dir (replacing any index there), and return a reader on it.

    The labels and text of a clip are taken from its variant-0 example. Features may be float16 or float32
    (stored as float16)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    by_clip: dict[str, dict[int, CachedExample]] = {}
    for ex in examples:
        by_clip.setdefault(ex.clip_id, {})[int(ex.variant)] = ex
    if not by_clip:
        raise ValueError("write_examples needs at least one example")
    n_mels_set = {ex.features.shape[0] for vs in by_clip.values() for ex in vs.values()}
    if len(n_mels_set) != 1:
        raise ValueError(f"all examples must have the same number of mel bins, got {sorted(n_mels_set)}")
    n_mels = n_mels_set.pop()
    variants = max(v for vs in by_clip.values() for v in vs) + 1
    index = CacheIndex(meta={
        "n_mels": n_mels, "variants": variants, "model": model, "tokenizer_fingerprint": tokenizer_fingerprint,
        "feature_fingerprint": f"in-memory-{n_mels}", "text_normalization": text_normalization,
    })
    max_bytes = int(shard_max_mb * 1024 * 1024)
    feat_rows: list[FeatureRow] = []
    lab_rows: list[LabelRow] = []
    for cid in sorted(by_clip):
        vs = by_clip[cid]
        if 0 not in vs:
            raise ValueError(f"clip {cid!r} has no variant 0 (the clean clip)")
        clean = vs[0]
        lab_fp = _digest("labels", cid, clean.text, np.asarray(clean.labels, np.int32).tobytes())
        lab_rows.append(LabelRow(cid, np.asarray(clean.labels, np.int32), clean.text, lab_fp))
        index.clips[cid] = {"split": clean.split, "variants": {}}
        for v in sorted(vs):
            ex = vs[v]
            f16 = np.ascontiguousarray(ex.features, dtype=np.float16)
            fp = _digest("features", cid, str(v), f16.tobytes(), repr(float(ex.floor)))
            feat_rows.append(FeatureRow(cid, v, fp, f16, float(ex.floor)))
    for group in split_rows(lab_rows, max_bytes):
        info = write_shard(cache_dir, "mem", LABEL_KIND, group)
        index.shards[info.name] = info
        for i, r in enumerate(group):
            index.clips[r.clip_id]["labels"] = {"shard": info.name, "row": i, "fp": r.fingerprint}
    for group in split_rows(feat_rows, max_bytes):
        info = write_shard(cache_dir, "mem", FEATURE_KIND, group)
        index.shards[info.name] = info
        for i, r in enumerate(group):
            index.clips[r.clip_id]["variants"][str(r.variant)] = {"shard": info.name, "row": i, "fp": r.fingerprint}
    for p in cache_dir.glob(PART_INDEX_GLOB):
        p.unlink()
    index.save(cache_dir / INDEX_NAME)
    return FeatureCache(cache_dir)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
